// What the dashboard and the execution page compute from execution records:
// throughput per minute, success rate, latency percentiles, and the Gantt
// layout of one execution's steps.

import type { ExecutionRecord, StepStatus } from './types';

/** Nearest-rank percentile (p in 0..100); null for no values. */
export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

export interface WindowStats {
  /** Executions created in each minute of the window, oldest first. */
  perMinute: number[];
  total: number;
  completed: number;
  failed: number;
  /** Some inputs completed, some failed: counted against the success rate. */
  partiallyFailed: number;
  cancelled: number;
  running: number;
  /** completed / (completed + failed + partially failed), null when none finished. */
  successRate: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
  ratePerMinute: number;
}

export function windowStats(records: ExecutionRecord[], nowMs: number, minutes: number): WindowStats {
  const start = nowMs - minutes * 60_000;
  const perMinute = new Array<number>(minutes).fill(0);
  const inWindow = records.filter((r) => {
    const t = Date.parse(r.created_at);
    return Number.isFinite(t) && t > start && t <= nowMs;
  });
  for (const r of inWindow) {
    const i = Math.min(minutes - 1, Math.floor((Date.parse(r.created_at) - start) / 60_000));
    perMinute[i] += 1;
  }
  const count = (s: string) => inWindow.filter((r) => r.status === s).length;
  const completed = count('completed');
  const failed = count('failed');
  const partiallyFailed = count('partially_failed');
  const latencies = inWindow
    .filter((r) => r.status === 'completed' && typeof r.execution_time_ms === 'number')
    .map((r) => r.execution_time_ms as number);
  return {
    perMinute,
    total: inWindow.length,
    completed,
    failed,
    partiallyFailed,
    cancelled: count('cancelled'),
    running: count('running') + count('pending'),
    successRate: completed + failed + partiallyFailed > 0 ? completed / (completed + failed + partiallyFailed) : null,
    p50Ms: percentile(latencies, 50),
    p95Ms: percentile(latencies, 95),
    ratePerMinute: inWindow.length / minutes,
  };
}

export interface GanttBar {
  stepId: string;
  componentName: string;
  level: number;
  status: StepStatus;
  attempts: number;
  /** Offsets from the execution's first step start, in ms. */
  startMs: number;
  durationMs: number;
}

export interface Gantt {
  spanMs: number;
  bars: GanttBar[];
  levels: { level: number; startMs: number; endMs: number }[];
}

/** Bars of the steps that ran, by level then start; null before any started. */
export function ganttOf(record: ExecutionRecord): Gantt | null {
  const ran = record.steps.filter((s) => s.started_at && Number.isFinite(Date.parse(s.started_at)));
  if (ran.length === 0) return null;
  const t0 = Math.min(...ran.map((s) => Date.parse(s.started_at!)));
  const bars: GanttBar[] = ran.map((s) => {
    const start = Date.parse(s.started_at!) - t0;
    const end = s.finished_at ? Date.parse(s.finished_at) - t0 : NaN;
    const duration = s.processing_time_ms ?? (Number.isFinite(end) ? end - start : 0);
    return {
      stepId: s.stepId,
      componentName: s.componentName,
      level: s.level,
      status: s.status,
      attempts: s.attempts,
      startMs: start,
      durationMs: Math.max(0, duration),
    };
  });
  bars.sort((a, b) => a.level - b.level || a.startMs - b.startMs || a.stepId.localeCompare(b.stepId));
  const spanMs = Math.max(1, ...bars.map((b) => b.startMs + b.durationMs));
  const levelIds = [...new Set(bars.map((b) => b.level))];
  const levels = levelIds.map((level) => {
    const of = bars.filter((b) => b.level === level);
    return {
      level,
      startMs: Math.min(...of.map((b) => b.startMs)),
      endMs: Math.max(...of.map((b) => b.startMs + b.durationMs)),
    };
  });
  return { spanMs, bars, levels };
}
