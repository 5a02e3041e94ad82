// The logic behind the step and pipeline editors that are not parameter forms:
// retries, timeouts, the fallback, global parameters, the fields without an
// editor (as JSON), and where an API refusal belongs. The checks repeat the
// backend's (crates/imageflow-pipeline/src/dag.rs) only to spare a round trip;
// the API stays the judge, and its message is placed on the field it names.

import type { Graph, GraphNode, PipelineMeta } from './graph';
import { PIPELINE_EDITED_KEYS, SERVER_KEPT_KEYS, STEP_EDITED_KEYS, stepIdError } from './graph';
import { defaultParams, paramErrors } from './params';
import type { Component, FallbackDefinition, PipelineDefinition, RetryPolicy } from './types';

export const MAX_RETRIES = 10;
export const MAX_STEP_TIMEOUT_SECONDS = 3600;
/** What the engine uses when a policy leaves the factor out. */
export const DEFAULT_BACKOFF = 2;

/** A number input's text: '' is "not set", anything unparseable is kept for the error. */
export function parseNumber(raw: string): number | string | undefined {
  const t = raw.trim();
  if (t === '') return undefined;
  const n = Number(t);
  return Number.isFinite(n) ? n : raw;
}

/**
 * The retry policy after one of its two inputs changed. No retries and the
 * default factor is no policy at all (what the engine does without one), so
 * clearing the field does not leave an empty policy behind.
 */
export function withRetry(
  retry: RetryPolicy | null,
  field: keyof RetryPolicy,
  raw: string,
): RetryPolicy | null {
  const current: RetryPolicy = retry ?? { maxRetries: 0, backoffFactor: DEFAULT_BACKOFF };
  const parsed = parseNumber(raw);
  const value = field === 'maxRetries' ? (parsed ?? 0) : (parsed ?? DEFAULT_BACKOFF);
  const next = { ...current, [field]: value } as RetryPolicy;
  const extraKeys = Object.keys(next).some((k) => k !== 'maxRetries' && k !== 'backoffFactor');
  if (next.maxRetries === 0 && next.backoffFactor === DEFAULT_BACKOFF && !extraKeys) return null;
  return next;
}

export function retryErrors(retry: RetryPolicy | null): Partial<Record<'maxRetries' | 'backoffFactor', string>> {
  if (!retry) return {};
  const errors: Partial<Record<'maxRetries' | 'backoffFactor', string>> = {};
  const n: unknown = retry.maxRetries;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > MAX_RETRIES) {
    errors.maxRetries = `retries must be a whole number from 0 to ${MAX_RETRIES}`;
  }
  const f: unknown = retry.backoffFactor;
  if (typeof f !== 'number' || !(f >= 1 && f <= 10)) errors.backoffFactor = 'backoff factor must be 1-10';
  return errors;
}

/** A step's attempt deadline: more than 0, at most an hour (the engine's bound). */
export function stepTimeoutError(t: unknown): string | null {
  if (t === null || t === undefined) return null;
  if (typeof t !== 'number' || !(t > 0 && t <= MAX_STEP_TIMEOUT_SECONDS)) {
    return `timeout must be more than 0 and at most ${MAX_STEP_TIMEOUT_SECONDS} seconds`;
  }
  return null;
}

/** The pipeline's deadline: positive; its upper bound is the server's setting, so the API judges that. */
export function pipelineTimeoutError(t: unknown): string | null {
  if (t === null || t === undefined) return null;
  if (typeof t !== 'number' || !(t > 0) || !Number.isFinite(t)) return 'timeout must be a positive number of seconds';
  return null;
}

/** A fallback of `component`, starting from its registry defaults like a new step. */
export function fallbackOf(component: Component | undefined, name: string): FallbackDefinition | null {
  if (!name) return null;
  return { componentName: name, parameters: component ? defaultParams(component) : {} };
}

/** "Fall back to what that step does": its component and parameters. */
export function fallbackLike(step: GraphNode): FallbackDefinition {
  return { componentName: step.component, parameters: { ...step.params } };
}

/** Everything wrong with a node that can be told without the server, by field. */
export function nodeProblems(graph: Graph, node: GraphNode, components: Component[]): Record<string, string> {
  const problems: Record<string, string> = {};
  const id = stepIdError(graph, node.uid, node.stepId);
  if (id) problems.stepId = id;
  const component = components.find((c) => c.name === node.component);
  for (const [name, e] of Object.entries(paramErrors(component, node.params))) problems[`parameters.${name}`] = e;
  for (const [name, e] of Object.entries(retryErrors(node.retry))) problems[`retryPolicy.${name}`] = e!;
  const t = stepTimeoutError(node.timeoutSeconds);
  if (t) problems.timeoutSeconds = t;
  if (node.fallback) {
    const fc = components.find((c) => c.name === node.fallback!.componentName);
    if (!fc) problems.fallback = `unknown component ${node.fallback.componentName}`;
    for (const [name, e] of Object.entries(paramErrors(fc, node.fallback.parameters))) {
      problems[`fallback.parameters.${name}`] = e;
    }
  }
  return problems;
}

// Global parameters --------------------------------------------------------

/** The original system's keys: strings (or null) when present; each gets a text field. */
export const GLOBAL_STRING_KEYS = ['inputPath', 'outputPath', 'executionId'] as const;
export type GlobalStringKey = (typeof GLOBAL_STRING_KEYS)[number];

const isStringKey = (k: string): k is GlobalStringKey => (GLOBAL_STRING_KEYS as readonly string[]).includes(k);

/** The text a string key's field shows; a non-string value is shown in the JSON part instead. */
export function globalText(globals: Record<string, unknown> | undefined, key: GlobalStringKey): string {
  const v = globals?.[key];
  return typeof v === 'string' ? v : '';
}

/** Sets one string key; an emptied field removes the key. */
export function withGlobalText(
  globals: Record<string, unknown> | undefined,
  key: GlobalStringKey,
  text: string,
): Record<string, unknown> {
  const next = { ...(globals ?? {}) };
  if (text === '') delete next[key];
  else next[key] = text;
  return next;
}

/** The global parameters the text fields do not show: what the JSON box holds. */
export function otherGlobals(globals: Record<string, unknown> | undefined): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(globals ?? {}).filter(([k, v]) => !(isStringKey(k) && typeof v === 'string')),
  );
}

export type Parsed<T> = { value: T; error?: undefined } | { value?: undefined; error: string };

export function parseJsonObject(text: string): Parsed<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (e) {
    return { error: `not JSON: ${(e as Error).message}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { error: 'must be a JSON object ({"key": value, ...})' };
  }
  return { value: value as Record<string, unknown> };
}

/** Replaces the JSON part of the global parameters, keeping the text fields' keys. */
export function withOtherGlobals(
  globals: Record<string, unknown> | undefined,
  text: string,
): Parsed<Record<string, unknown>> {
  const parsed = parseJsonObject(text);
  if (parsed.error !== undefined) return parsed;
  const keep = Object.fromEntries(
    Object.entries(globals ?? {}).filter(([k, v]) => isStringKey(k) && typeof v === 'string'),
  );
  for (const [k, v] of Object.entries(parsed.value)) {
    if (!isStringKey(k)) continue;
    if (typeof v === 'string') return { error: `${k} has its own field above` };
    if (v !== null) return { error: `${k} must be a string` };
    if (k in keep) return { error: `${k} is set in its field above` };
  }
  return { value: { ...keep, ...parsed.value } };
}

// Fields without an editor ---------------------------------------------------

/** A step's keys without an editor, as the JSON the inspector shows. */
export function stepExtraJson(node: GraphNode): string {
  return JSON.stringify(node.extra ?? {}, null, 2);
}

export function parseStepExtra(text: string): Parsed<Record<string, unknown>> {
  const parsed = parseJsonObject(text);
  if (parsed.error !== undefined) return parsed;
  const owned = Object.keys(parsed.value).filter((k) => (STEP_EDITED_KEYS as readonly string[]).includes(k));
  if (owned.length) return { error: `${owned.join(', ')} ha${owned.length === 1 ? 's' : 've'} an editor of its own` };
  return parsed;
}

/** The pipeline's keys without an editor: `metadata` less its description, and the rest. */
export function pipelineExtraJson(meta: PipelineMeta): string {
  const shown: Record<string, unknown> = {};
  if (meta.metadata !== undefined) shown.metadata = meta.metadata;
  return JSON.stringify({ ...shown, ...(meta.extra ?? {}) }, null, 2);
}

export function parsePipelineExtra(
  text: string,
): Parsed<Pick<PipelineMeta, 'metadata' | 'extra'>> {
  const parsed = parseJsonObject(text);
  if (parsed.error !== undefined) return parsed;
  const { metadata, ...extra } = parsed.value;
  const reserved = [...PIPELINE_EDITED_KEYS, ...SERVER_KEPT_KEYS] as readonly string[];
  const owned = Object.keys(extra).filter((k) => reserved.includes(k));
  if (owned.length) return { error: `${owned.join(', ')} cannot be set here` };
  if (metadata !== undefined) {
    if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
      return { error: 'metadata must be an object' };
    }
    if ('description' in metadata) return { error: 'the description has its own field' };
  }
  return { value: { metadata: metadata as Record<string, unknown> | undefined, extra } };
}

// Where an API refusal belongs -----------------------------------------------

export interface ErrorPlace {
  /** The step at fault, or null for the pipeline as a whole. */
  stepId: string | null;
  /** The field in the inspector ('retryPolicy.maxRetries', 'parameters.width', ...); '' when none is named. */
  field: string;
}

/**
 * Places a 400 from `POST|PUT /v1/pipelines`: the body's `step_id` names the
 * step and the message names the field (the wording of dag.rs and registry.rs);
 * a body the server could not even deserialize names its JSON path
 * (`steps[2].retryPolicy.maxRetries: invalid type ...`), mapped back through
 * the definition that was sent.
 */
export function placeApiError(
  message: string,
  stepId: string | null,
  sent: PipelineDefinition | null = null,
): ErrorPlace {
  const path = /deserialize[^:]*: (?:steps\[(\d+)\]\.?)?([A-Za-z_.[\]0-9]*):/.exec(message);
  if (path && /malformed JSON body/.test(message)) {
    const step = path[1] !== undefined ? (sent?.steps[Number(path[1])]?.stepId ?? null) : null;
    return { stepId: step ?? stepId, field: path[2].replace(/\[\d+\]/g, '') };
  }
  if (stepId !== null) return { stepId, field: stepField(message) };
  const global = /globalParameters\.(\w+)/.exec(message);
  if (global) return { stepId: null, field: `globalParameters.${global[1]}` };
  if (/^timeoutSeconds/.test(message)) return { stepId: null, field: 'timeoutSeconds' };
  if (/^pipelineName/.test(message)) return { stepId: null, field: 'pipelineName' };
  if (/^pipelineId/.test(message)) return { stepId: null, field: 'pipelineId' };
  if (/step/.test(message)) return { stepId: null, field: 'steps' };
  return { stepId: null, field: '' };
}

function stepField(message: string): string {
  // "step "x": fallback: parameter "width" ..." is about the fallback's form.
  const inFallback = /^step "[^"]*": fallback: /.test(message);
  const prefix = inFallback ? 'fallback.' : '';
  const param = /parameter "([^"]+)"/.exec(message);
  if (param && !/unknown parameter/.test(message)) return `${prefix}parameters.${param[1]}`;
  if (/width and height are both 0/.test(message)) return `${prefix}parameters.width`;
  if (inFallback) return 'fallback';
  if (/retryPolicy\.maxRetries/.test(message)) return 'retryPolicy.maxRetries';
  if (/retryPolicy\.backoffFactor/.test(message)) return 'retryPolicy.backoffFactor';
  if (/timeoutSeconds/.test(message)) return 'timeoutSeconds';
  if (/stepId/.test(message)) return 'stepId';
  if (/depends on|dependency|cycle in dependencies/.test(message)) return 'dependencies';
  if (/unknown (component|parameter)/.test(message)) return 'parameters';
  return '';
}
