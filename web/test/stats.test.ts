import { describe, expect, it } from 'vitest';
import { ganttOf, percentile, windowStats } from '../src/stats';
import type { ExecutionRecord, StepRecord } from '../src/types';

const NOW = Date.parse('2025-01-01T12:00:00Z');
const at = (minAgo: number) => new Date(NOW - minAgo * 60_000).toISOString();

function step(stepId: string, level: number, start: string | null, ms: number | null, status: StepRecord['status'] = 'completed'): StepRecord {
  return {
    stepId,
    input_index: 0,
    componentName: 'resize',
    status,
    level,
    attempts: 1,
    started_at: start,
    finished_at: null,
    processing_time_ms: ms,
    service_time_ms: null,
    error: null,
    output: null,
  };
}

function exec(id: string, minAgo: number, status: ExecutionRecord['status'], ms: number | null): ExecutionRecord {
  return {
    execution_id: id,
    pipelineId: null,
    pipeline_revision: null,
    status,
    trace_id: null,
    inputs: ['f'],
    created_at: at(minAgo),
    started_at: null,
    finished_at: null,
    execution_time_ms: ms,
    error: null,
    steps: [],
    input_results: [],
  };
}

describe('dashboard figures', () => {
  it('nearest-rank percentiles', () => {
    expect(percentile([], 95)).toBeNull();
    expect(percentile([5], 95)).toBe(5);
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(hundred, 95)).toBe(95);
    expect(percentile(hundred, 50)).toBe(50);
  });

  it('counts per minute, success rate and p95 inside the window only', () => {
    const records = [
      exec('a', 0.5, 'completed', 100),
      exec('b', 1.5, 'completed', 300),
      exec('c', 1.2, 'failed', null),
      exec('d', 4.5, 'running', null),
      exec('old', 30, 'failed', null),
    ];
    const s = windowStats(records, NOW, 5);
    expect(s.total).toBe(4);
    expect(s.perMinute).toEqual([1, 0, 0, 2, 1]);
    expect(s.successRate).toBeCloseTo(2 / 3);
    expect(s.p95Ms).toBe(300);
    expect(s.running).toBe(1);
    expect(s.ratePerMinute).toBeCloseTo(0.8);
    expect(windowStats([], NOW, 5).successRate).toBeNull();
    // Partly failed is no success.
    const partly = windowStats([...records, exec('p', 2, 'partially_failed', 500)], NOW, 5);
    expect(partly.partiallyFailed).toBe(1);
    expect(partly.successRate).toBeCloseTo(2 / 4);
  });
});

describe('execution timeline', () => {
  it('lays out steps by level on one time axis', () => {
    const t0 = Date.parse('2025-01-01T12:00:00.000Z');
    const iso = (ms: number) => new Date(t0 + ms).toISOString();
    const record = exec('e', 0, 'completed', 60);
    record.steps = [
      step('filter', 1, iso(30), 20),
      step('resize', 0, iso(0), 25),
      step('sharpen', 1, iso(28), 30),
      step('never', 2, null, null, 'pending'),
    ];
    const g = ganttOf(record)!;
    expect(g.bars.map((b) => [b.stepId, b.startMs, b.durationMs])).toEqual([
      ['resize', 0, 25],
      ['sharpen', 28, 30],
      ['filter', 30, 20],
    ]);
    expect(g.spanMs).toBe(58);
    expect(g.levels).toEqual([
      { level: 0, startMs: 0, endMs: 25 },
      { level: 1, startMs: 28, endMs: 58 },
    ]);
    expect(ganttOf(exec('x', 0, 'pending', null))).toBeNull();
  });
});
