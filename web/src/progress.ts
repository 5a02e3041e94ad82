// An execution kept current from its progress events, and what the canvas
// and the execution page show of an execution with several inputs: each
// input runs the whole pipeline, so a step runs once per input.

import type { ExecutionRecord, ExecutionStatus, InputResult, InputStatus, ProgressEvent, StepRecord } from './types';
import { TERMINAL } from './types';

const EXECUTION_STATUSES: ReadonlySet<string> = new Set<ExecutionStatus>([
  'pending',
  'running',
  'completed',
  'failed',
  'cancelled',
  'partially_failed',
]);
const INPUT_STATUSES: ReadonlySet<string> = new Set<InputStatus>(['pending', 'running', 'completed', 'failed', 'cancelled']);
const STEP_ENDED: ReadonlySet<string> = new Set(['completed', 'failed', 'skipped', 'cancelled']);

/**
 * Whether this event ends the execution. An input's end also has no step id
 * and a terminal status: taking it for the execution's would stop watching
 * at the first input's end.
 */
export function isFinalEvent(event: ProgressEvent): boolean {
  return !event.step_id && event.input_index === undefined && TERMINAL.has(event.status);
}

/** An input-level event that ends its input (its output is then recorded). */
export function endsAnInput(event: ProgressEvent): boolean {
  return !event.step_id && event.input_index !== undefined && TERMINAL.has(event.status);
}

/** Applies one progress event to an execution record (a new value). */
export function applyProgress(record: ExecutionRecord, event: ProgressEvent): ExecutionRecord {
  const started = record.status === 'pending' ? 'running' : record.status;
  if (event.step_id) {
    const index = event.input_index ?? 0;
    return {
      ...record,
      status: started,
      steps: record.steps.map((s) => {
        if (s.stepId !== event.step_id || s.input_index !== index) return s;
        const status = event.status as StepRecord['status'];
        return {
          ...s,
          status,
          attempts: event.attempt ?? s.attempts,
          started_at: s.started_at ?? (status === 'running' ? event.timestamp : null),
          processing_time_ms: event.processing_time_ms ?? s.processing_time_ms,
          error: status === 'failed' || status === 'retrying' ? event.message : s.error,
        };
      }),
    };
  }
  if (event.input_index !== undefined) {
    if (!INPUT_STATUSES.has(event.status)) return record;
    const status = event.status as InputStatus;
    const ended = TERMINAL.has(status);
    return {
      ...record,
      status: started,
      input_results: record.input_results.map((r) =>
        r.index !== event.input_index
          ? r
          : {
              ...r,
              status,
              started_at: r.started_at ?? (status === 'running' ? event.timestamp : null),
              finished_at: ended ? event.timestamp : r.finished_at,
              execution_time_ms: event.processing_time_ms ?? r.execution_time_ms,
              error: status === 'failed' ? event.message : r.error,
            },
      ),
    };
  }
  if (!EXECUTION_STATUSES.has(event.status)) return record;
  const status = event.status as ExecutionStatus;
  return {
    ...record,
    status,
    error: status === 'running' || status === 'completed' ? record.error : event.message || record.error,
  };
}

/**
 * The live record with what the server has recorded of the steps and inputs
 * that ended (outputs, detections, clean errors: events carry none of them).
 * Only ended ones are taken, so a fetch that crossed newer events undoes none.
 */
export function withRecorded(live: ExecutionRecord, fetched: ExecutionRecord): ExecutionRecord {
  const key = (s: StepRecord) => `${s.input_index}/${s.stepId}`;
  const steps = new Map(fetched.steps.filter((s) => STEP_ENDED.has(s.status)).map((s) => [key(s), s]));
  const inputs = new Map(fetched.input_results.filter((r) => TERMINAL.has(r.status)).map((r) => [r.index, r]));
  return {
    ...live,
    steps: live.steps.map((s) => steps.get(key(s)) ?? s),
    input_results: live.input_results.map((r) => inputs.get(r.index) ?? r),
  };
}

/** Whether the execution ran several inputs (one input looks as it always did). */
export function hasSeveralInputs(record: ExecutionRecord): boolean {
  return record.input_results.length > 1;
}

/** The record as one input saw it: that input's steps only. */
export function forInput(record: ExecutionRecord, index: number): ExecutionRecord {
  return { ...record, steps: record.steps.filter((s) => s.input_index === index) };
}

/** A step's runs of one input, by step id: what a node shows. */
export interface NodeRun {
  status: string;
  attempts?: number;
  processing_time_ms: number | null;
  /** Across inputs: how many of its runs are done, e.g. "3/5 done". */
  progress?: string;
}

/**
 * What each node of the canvas shows for an execution: the step's run when
 * there is one input or one is followed; otherwise a summary across inputs
 * (status and "3/5 done"), since one input's state would hide the others and
 * the tiles below already show each input.
 */
export function nodeRuns(record: ExecutionRecord | null, followed: number | null): Map<string, NodeRun> {
  if (!record) return new Map();
  if (followed !== null || !hasSeveralInputs(record)) {
    return new Map(forInput(record, followed ?? 0).steps.map((s) => [s.stepId, s]));
  }
  const byStep = new Map<string, StepRecord[]>();
  for (const s of record.steps) byStep.set(s.stepId, [...(byStep.get(s.stepId) ?? []), s]);
  return new Map([...byStep].map(([id, runs]) => [id, summarise(runs)]));
}

/** One step's runs over every input as one status and a count. */
export function summarise(runs: StepRecord[]): NodeRun {
  const count = (status: string) => runs.filter((r) => r.status === status).length;
  const done = count('completed');
  const failed = count('failed');
  const ended = runs.filter((r) => STEP_ENDED.has(r.status)).length;
  let status: string;
  if (count('retrying') > 0) status = 'retrying';
  else if (count('running') > 0 || (ended > 0 && ended < runs.length)) status = 'running';
  else if (ended === 0) status = 'pending';
  else if (failed > 0) status = done > 0 ? 'partially_failed' : 'failed';
  else status = done > 0 ? 'completed' : runs[0].status;
  const progress = `${done}/${runs.length} done${failed ? `, ${failed} failed` : ''}`;
  return { status, processing_time_ms: null, progress };
}

/** How many inputs are in each status, for a line such as "3 of 5 completed, 1 failed". */
export function inputCounts(results: InputResult[]): Record<InputStatus, number> {
  const counts: Record<InputStatus, number> = { pending: 0, running: 0, completed: 0, failed: 0, cancelled: 0 };
  for (const r of results) counts[r.status] += 1;
  return counts;
}

export function inputsLine(results: InputResult[]): string {
  const c = inputCounts(results);
  const rest = (['failed', 'running', 'pending', 'cancelled'] as const).filter((s) => c[s] > 0).map((s) => `${c[s]} ${s}`);
  return [`${c.completed} of ${results.length} inputs completed`, ...rest].join(', ');
}

/** A step's runs of one input, ended: "2/3 steps". */
export function stepsDone(record: ExecutionRecord, index: number): string {
  const steps = record.steps.filter((s) => s.input_index === index);
  return `${steps.filter((s) => STEP_ENDED.has(s.status)).length}/${steps.length} steps`;
}
