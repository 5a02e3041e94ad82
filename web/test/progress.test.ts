import { describe, expect, it } from 'vitest';
import {
  applyProgress,
  endsAnInput,
  forInput,
  inputsLine,
  isFinalEvent,
  nodeRuns,
  stepsDone,
  summarise,
  withRecorded,
} from '../src/progress';
import type { ExecutionRecord, InputResult, ProgressEvent, StepRecord } from '../src/types';

function step(stepId: string, input_index: number, status: StepRecord['status'] = 'pending'): StepRecord {
  return {
    stepId,
    input_index,
    componentName: 'resize',
    status,
    level: 0,
    attempts: 0,
    started_at: null,
    finished_at: null,
    processing_time_ms: null,
    service_time_ms: null,
    error: null,
    output: null,
  };
}

function input(index: number, status: InputResult['status'] = 'pending'): InputResult {
  return {
    index,
    input: `file-${index}`,
    bucket: 'imageflow',
    object_key: `uploads/file-${index}.png`,
    status,
    started_at: null,
    finished_at: null,
    execution_time_ms: null,
    error: null,
    output: null,
  };
}

/** An execution of `stepIds` on `inputs` inputs, every step pending. */
function execution(inputs: number, stepIds: string[] = ['resize', 'filter']): ExecutionRecord {
  const indices = Array.from({ length: inputs }, (_, i) => i);
  return {
    execution_id: 'e',
    pipelineId: null,
    pipeline_revision: null,
    status: 'pending',
    trace_id: null,
    inputs: indices.map((i) => `file-${i}`),
    created_at: 't0',
    started_at: null,
    finished_at: null,
    execution_time_ms: null,
    error: null,
    steps: indices.flatMap((i) => stepIds.map((id) => step(id, i))),
    input_results: indices.map((i) => input(i)),
  };
}

const event = (fields: Partial<ProgressEvent>): ProgressEvent => ({
  execution_id: 'e',
  status: 'running',
  message: '',
  timestamp: 't',
  ...fields,
});

describe("the execution's final event", () => {
  it('is the execution-level one with a terminal status, never an input ending', () => {
    expect(isFinalEvent(event({ status: 'completed' }))).toBe(true);
    expect(isFinalEvent(event({ status: 'partially_failed' }))).toBe(true);
    expect(isFinalEvent(event({ status: 'cancelled' }))).toBe(true);
    expect(isFinalEvent(event({ status: 'running' }))).toBe(false);
    // The first input ending is not the end of the execution.
    expect(isFinalEvent(event({ input_index: 0, status: 'completed' }))).toBe(false);
    expect(isFinalEvent(event({ input_index: 3, status: 'failed' }))).toBe(false);
    expect(isFinalEvent(event({ step_id: 'resize', input_index: 0, status: 'completed' }))).toBe(false);
    expect(endsAnInput(event({ input_index: 0, status: 'completed' }))).toBe(true);
    expect(endsAnInput(event({ input_index: 0, status: 'running' }))).toBe(false);
    expect(endsAnInput(event({ status: 'completed' }))).toBe(false);
  });
});

describe('folding events per input', () => {
  it('applies step events of one input to that input only', () => {
    let r = execution(1, ['resize']);
    r = applyProgress(r, event({ step_id: 'resize', input_index: 0, status: 'running', timestamp: 't1', attempt: 1 }));
    expect(r.status).toBe('running');
    expect(r.steps[0]).toMatchObject({ status: 'running', started_at: 't1', attempts: 1 });
    r = applyProgress(r, event({ step_id: 'resize', input_index: 0, status: 'retrying', message: 'resize unavailable', attempt: 2 }));
    expect(r.steps[0]).toMatchObject({ status: 'retrying', attempts: 2, error: 'resize unavailable' });
    r = applyProgress(r, event({ step_id: 'resize', input_index: 0, status: 'completed', processing_time_ms: 12.5 }));
    expect(r.steps[0]).toMatchObject({ status: 'completed', processing_time_ms: 12.5, attempts: 2 });
    r = applyProgress(r, event({ status: 'completed', message: 'done' }));
    expect(r.status).toBe('completed');
    expect(applyProgress(r, event({ status: 'weird' }))).toBe(r);
  });

  it('keeps inputs apart and ends the execution only on its own event', () => {
    let r = execution(3);
    r = applyProgress(r, event({ status: 'running' }));
    r = applyProgress(r, event({ input_index: 1, status: 'running', timestamp: 't1' }));
    r = applyProgress(r, event({ step_id: 'resize', input_index: 1, status: 'completed', processing_time_ms: 4 }));
    expect(forInput(r, 1).steps.map((s) => s.status)).toEqual(['completed', 'pending']);
    expect(forInput(r, 0).steps.map((s) => s.status)).toEqual(['pending', 'pending']);
    expect(stepsDone(r, 1)).toBe('1/2 steps');

    r = applyProgress(r, event({ input_index: 1, status: 'completed', timestamp: 't2', processing_time_ms: 9, output_path: 'b/k' }));
    expect(r.input_results[1]).toMatchObject({ status: 'completed', started_at: 't1', finished_at: 't2', execution_time_ms: 9 });
    expect(r.status).toBe('running');

    r = applyProgress(r, event({ input_index: 2, status: 'failed', message: 'input 2 (file-2) failed: step "resize" failed: bad' }));
    expect(r.input_results[2]).toMatchObject({ status: 'failed', error: 'input 2 (file-2) failed: step "resize" failed: bad' });
    expect(r.status).toBe('running');
    expect(inputsLine(r.input_results)).toBe('1 of 3 inputs completed, 1 failed, 1 pending');

    r = applyProgress(r, event({ status: 'partially_failed', message: '1 of 3 inputs failed: input 2 (file-2): bad' }));
    expect(r).toMatchObject({ status: 'partially_failed', error: '1 of 3 inputs failed: input 2 (file-2): bad' });
  });

  it("takes the server's record of what ended, and nothing older than the live state", () => {
    let live = execution(2, ['resize']);
    live = applyProgress(live, event({ step_id: 'resize', input_index: 0, status: 'completed' }));
    live = applyProgress(live, event({ input_index: 0, status: 'completed' }));
    live = applyProgress(live, event({ step_id: 'resize', input_index: 1, status: 'running' }));
    // Fetched before input 1 started: its pending state must not undo the running one.
    const fetched = execution(2, ['resize']);
    const output = { file_id: 'out-0', bucket: 'b', object_key: 'k', content_type: 'image/png', size_bytes: 9, width: 4, height: 4 };
    fetched.steps[0] = { ...step('resize', 0, 'completed'), output };
    fetched.input_results[0] = { ...input(0, 'completed'), output, execution_time_ms: 5 };
    const merged = withRecorded(live, fetched);
    expect(merged.input_results[0].output?.file_id).toBe('out-0');
    expect(merged.steps[0].output?.file_id).toBe('out-0');
    expect(merged.steps[1].status).toBe('running');
    expect(merged.input_results[1].status).toBe('pending');
  });
});

describe('node status across inputs', () => {
  const runs = (...statuses: StepRecord['status'][]) => statuses.map((s, i) => step('resize', i, s));

  it('summarises a step over its inputs', () => {
    expect(summarise(runs('pending', 'pending'))).toMatchObject({ status: 'pending', progress: '0/2 done' });
    expect(summarise(runs('completed', 'running', 'pending'))).toMatchObject({ status: 'running', progress: '1/3 done' });
    // Between one input's end and the next one's start nothing runs, but the step is not done.
    expect(summarise(runs('completed', 'pending')).status).toBe('running');
    expect(summarise(runs('completed', 'retrying')).status).toBe('retrying');
    expect(summarise(runs('completed', 'completed', 'completed'))).toMatchObject({ status: 'completed', progress: '3/3 done' });
    expect(summarise(runs('completed', 'failed', 'completed'))).toMatchObject({
      status: 'partially_failed',
      progress: '2/3 done, 1 failed',
    });
    expect(summarise(runs('failed', 'skipped')).status).toBe('failed');
    expect(summarise(runs('skipped', 'skipped')).status).toBe('skipped');
  });

  it('shows one input as it always did, several as a summary unless one is followed', () => {
    const one = applyProgress(execution(1), event({ step_id: 'filter', input_index: 0, status: 'running' }));
    expect(nodeRuns(one, null).get('filter')).toBe(one.steps[1]);

    let r = execution(3);
    for (const i of [0, 1]) r = applyProgress(r, event({ step_id: 'resize', input_index: i, status: 'completed', processing_time_ms: 3 }));
    const summary = nodeRuns(r, null);
    expect(summary.get('resize')).toMatchObject({ status: 'running', progress: '2/3 done', processing_time_ms: null });
    expect(summary.get('filter')).toMatchObject({ status: 'pending', progress: '0/3 done' });
    expect(nodeRuns(r, 1).get('resize')).toMatchObject({ status: 'completed', processing_time_ms: 3, input_index: 1 });
    expect(nodeRuns(r, 2).get('resize')).toMatchObject({ status: 'pending' });
    expect(nodeRuns(null, null).size).toBe(0);
  });
});
