// The pipeline on the canvas: steps as nodes with positions, dependencies as
// ordered lists (the first one listed hands its image on, as the engine
// does). Pure functions over immutable values, so the canvas, the tests and
// the save/load code share one model.
//
// Round trip: a definition opened on the canvas and saved unchanged comes
// back equal as JSON. So a node keeps its parameters as the definition states
// them (registry defaults are shown, not written), and every key the canvas
// has no editor for is carried in `extra`, at step and at pipeline level.

import type {
  Component,
  FallbackDefinition,
  PipelineDefinition,
  RetryPolicy,
  StepDefinition,
  StoredPipeline,
} from './types';
import { defaultParams } from './params';

export interface GraphNode {
  uid: string;
  stepId: string;
  component: string;
  /** As the definition states them: a parameter left out runs with its default. */
  params: Record<string, unknown>;
  /** uids of the steps this one depends on, in order. */
  deps: string[];
  x: number;
  y: number;
  retry: RetryPolicy | null;
  continueOnFailure: boolean;
  timeoutSeconds: number | null;
  fallback: FallbackDefinition | null;
  /** The step's keys without an editor (componentVersion, resources, ...), as given. */
  extra: Record<string, unknown>;
}

export interface Graph {
  nodes: GraphNode[];
}

export interface Edge {
  from: string;
  to: string;
  /** Position in the dependent's list (0: the image source). */
  index: number;
}

export const NODE_WIDTH = 196;
export const NODE_HEIGHT = 104;
const COLUMN = 250;
const ROW = 140;
const MARGIN = 32;

export const emptyGraph: Graph = { nodes: [] };

let counter = 0;
export function newUid(): string {
  counter += 1;
  return `n${Date.now().toString(36)}${counter}`;
}

const SHORT_NAMES: Record<string, string> = { ai_detection: 'detect' };

/** A step id not used yet: `resize`, `resize-2`, ... */
export function uniqueStepId(graph: Graph, component: string): string {
  const base = SHORT_NAMES[component] ?? component;
  const taken = new Set(graph.nodes.map((n) => n.stepId));
  if (!taken.has(base)) return base;
  for (let i = 2; ; i += 1) if (!taken.has(`${base}-${i}`)) return `${base}-${i}`;
}

/** Where a node added by click goes: the next free cell of a grid. */
export function nextFreePosition(graph: Graph, columns = 3): { x: number; y: number } {
  for (let i = 0; ; i += 1) {
    const x = MARGIN + (i % columns) * COLUMN;
    const y = MARGIN + Math.floor(i / columns) * ROW;
    const free = graph.nodes.every(
      (n) => Math.abs(n.x - x) >= NODE_WIDTH / 2 || Math.abs(n.y - y) >= NODE_HEIGHT / 2,
    );
    if (free) return { x, y };
  }
}

export function addNode(
  graph: Graph,
  component: Component,
  position?: { x: number; y: number },
): { graph: Graph; node: GraphNode } {
  const at = position ?? nextFreePosition(graph);
  const node: GraphNode = {
    uid: newUid(),
    stepId: uniqueStepId(graph, component.name),
    component: component.name,
    params: defaultParams(component),
    deps: [],
    x: Math.max(0, Math.round(at.x)),
    y: Math.max(0, Math.round(at.y)),
    retry: null,
    continueOnFailure: false,
    timeoutSeconds: null,
    fallback: null,
    extra: {},
  };
  return { graph: { nodes: [...graph.nodes, node] }, node };
}

export function updateNode(graph: Graph, uid: string, change: Partial<GraphNode>): Graph {
  return { nodes: graph.nodes.map((n) => (n.uid === uid ? { ...n, ...change } : n)) };
}

export function removeNode(graph: Graph, uid: string): Graph {
  return {
    nodes: graph.nodes
      .filter((n) => n.uid !== uid)
      .map((n) => (n.deps.includes(uid) ? { ...n, deps: n.deps.filter((d) => d !== uid) } : n)),
  };
}

/**
 * `to` depends on `from` (an edge from's output → to's input). Cycles are
 * allowed here: the API is the judge and its message goes on the node.
 */
export function connect(graph: Graph, from: string, to: string): { graph: Graph; error?: string } {
  if (from === to) return { graph, error: 'a step cannot depend on itself' };
  const target = graph.nodes.find((n) => n.uid === to);
  if (!target || !graph.nodes.some((n) => n.uid === from)) return { graph, error: 'unknown step' };
  if (target.deps.includes(from)) return { graph };
  return { graph: updateNode(graph, to, { deps: [...target.deps, from] }) };
}

export function disconnect(graph: Graph, from: string, to: string): Graph {
  const target = graph.nodes.find((n) => n.uid === to);
  if (!target) return graph;
  return updateNode(graph, to, { deps: target.deps.filter((d) => d !== from) });
}

export function edges(graph: Graph): Edge[] {
  return graph.nodes.flatMap((n) => n.deps.map((from, index) => ({ from, to: n.uid, index })));
}

/** Step id rules of the API (letters, digits, '-', '_', '.'; 1-64). */
export function stepIdError(graph: Graph, uid: string, stepId: string): string | null {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(stepId)) {
    return "use 1-64 letters, digits, '-', '_' or '.'";
  }
  if (graph.nodes.some((n) => n.uid !== uid && n.stepId === stepId)) {
    return `another step is already named ${stepId}`;
  }
  return null;
}

/**
 * Level of each node: 0 for roots, else one more than its deepest
 * dependency (the engine's parallel levels). Nodes on a cycle get the level
 * reached when the walk stops, so a drawn cycle still lays out.
 */
export function levels(graph: Graph): Map<string, number> {
  const level = new Map<string, number>(graph.nodes.map((n) => [n.uid, 0]));
  for (let round = 0; round < graph.nodes.length; round += 1) {
    let changed = false;
    for (const n of graph.nodes) {
      const want = n.deps.reduce((m, d) => Math.max(m, (level.get(d) ?? -1) + 1), 0);
      if (want !== level.get(n.uid)) {
        level.set(n.uid, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return level;
}

/** Columns by level, rows in definition order within a level. */
export function layout(graph: Graph): Graph {
  const level = levels(graph);
  const rowOf = new Map<number, number>();
  return {
    nodes: graph.nodes.map((n) => {
      const l = level.get(n.uid) ?? 0;
      const row = rowOf.get(l) ?? 0;
      rowOf.set(l, row + 1);
      return { ...n, x: MARGIN + l * COLUMN, y: MARGIN + row * ROW };
    }),
  };
}

export interface PipelineMeta {
  pipelineId?: string;
  pipelineName: string;
  version: string;
  description?: string;
  /** `metadata` less its description, as given (absent: the definition had no `metadata`). */
  metadata?: Record<string, unknown>;
  globalParameters?: Record<string, unknown>;
  timeoutSeconds?: number;
  /** Top-level keys without an editor, as given. */
  extra?: Record<string, unknown>;
}

/** Keys a node edits itself; everything else in a step goes to `extra`. */
export const STEP_EDITED_KEYS = [
  'stepId',
  'componentName',
  'dependencies',
  'parameters',
  'retryPolicy',
  'timeoutSeconds',
  'continueOnFailure',
  'fallback',
] as const;

/** Keys the pipeline bar and panel edit; with `metadata`, the rest goes to `extra`. */
export const PIPELINE_EDITED_KEYS = [
  'pipelineId',
  'pipelineName',
  'version',
  'steps',
  'globalParameters',
  'timeoutSeconds',
] as const;

/** What the server keeps about a stored pipeline: not part of the definition sent back. */
export const SERVER_KEPT_KEYS = ['revision', 'createdAt', 'updatedAt'] as const;

// The API's field order, so an unchanged definition is the same text too.
const STEP_ORDER = [
  'stepId',
  'componentName',
  'componentVersion',
  'dependencies',
  'parameters',
  'resources',
  'retryPolicy',
  'timeoutSeconds',
  'continueOnFailure',
  'fallback',
];
const PIPELINE_ORDER = [
  'pipelineId',
  'pipelineName',
  'version',
  'metadata',
  'steps',
  'globalParameters',
  'timeoutSeconds',
];

function ordered<T extends Record<string, unknown>>(value: T, order: string[]): T {
  const keys = Object.keys(value);
  const sorted = [...order.filter((k) => keys.includes(k)), ...keys.filter((k) => !order.includes(k))];
  // fromEntries, not assignment: a key named "__proto__" stays a key.
  return Object.fromEntries(sorted.map((k) => [k, value[k]])) as T;
}

function without(value: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(value).filter(([k]) => !keys.includes(k)));
}

export function toStep(node: GraphNode, byUid: Map<string, GraphNode>): StepDefinition {
  const step: StepDefinition = {
    ...(node.extra ?? {}),
    stepId: node.stepId,
    componentName: node.component,
    dependencies: node.deps.map((d) => byUid.get(d)?.stepId ?? d),
    parameters: { ...node.params },
  };
  if (node.retry) step.retryPolicy = { ...node.retry };
  if (node.timeoutSeconds !== null) step.timeoutSeconds = node.timeoutSeconds;
  if (node.continueOnFailure) step.continueOnFailure = true;
  if (node.fallback) step.fallback = { ...node.fallback, parameters: { ...node.fallback.parameters } };
  return ordered(step, STEP_ORDER);
}

export function toDefinition(graph: Graph, meta: PipelineMeta): PipelineDefinition {
  const byUid = new Map(graph.nodes.map((n) => [n.uid, n]));
  const definition: PipelineDefinition = {
    ...(meta.extra ?? {}),
    pipelineName: meta.pipelineName,
    version: meta.version,
    steps: graph.nodes.map((n) => toStep(n, byUid)),
  };
  if (meta.pipelineId) definition.pipelineId = meta.pipelineId;
  if (meta.metadata !== undefined || meta.description !== undefined) {
    definition.metadata = { ...(meta.metadata ?? {}) };
    if (meta.description !== undefined) definition.metadata.description = meta.description;
  }
  if (meta.globalParameters !== undefined) definition.globalParameters = { ...meta.globalParameters };
  if (meta.timeoutSeconds !== undefined) definition.timeoutSeconds = meta.timeoutSeconds;
  return ordered(definition, PIPELINE_ORDER);
}

/** The pipeline-level part of a definition (or of a stored pipeline, less what the server keeps). */
export function metaFromDefinition(definition: PipelineDefinition | StoredPipeline): PipelineMeta {
  const meta: PipelineMeta = {
    pipelineName: definition.pipelineName,
    version: definition.version,
    extra: without(definition, [...PIPELINE_EDITED_KEYS, 'metadata', ...SERVER_KEPT_KEYS]),
  };
  if (definition.pipelineId !== undefined) meta.pipelineId = definition.pipelineId;
  if (definition.metadata !== undefined) {
    const { description, ...rest } = definition.metadata;
    meta.metadata = rest;
    if (description !== undefined) meta.description = description;
  }
  if (definition.globalParameters !== undefined) meta.globalParameters = { ...definition.globalParameters };
  if (definition.timeoutSeconds !== undefined) meta.timeoutSeconds = definition.timeoutSeconds;
  return meta;
}

/**
 * The canvas for a stored definition, parameters as the definition states
 * them; positions from `positions` (by step id) when every step has one,
 * else laid out by level.
 */
export function fromDefinition(
  definition: PipelineDefinition,
  positions: Record<string, { x: number; y: number }> = {},
): Graph {
  const uidOf = new Map(definition.steps.map((s) => [s.stepId, newUid()]));
  const nodes: GraphNode[] = definition.steps.map((s) => ({
    uid: uidOf.get(s.stepId)!,
    stepId: s.stepId,
    component: s.componentName,
    params: { ...(s.parameters ?? {}) },
    deps: (s.dependencies ?? []).map((d) => uidOf.get(d) ?? d),
    x: 0,
    y: 0,
    retry: s.retryPolicy ? { ...s.retryPolicy } : null,
    continueOnFailure: Boolean(s.continueOnFailure),
    timeoutSeconds: s.timeoutSeconds ?? null,
    fallback: s.fallback ? { ...s.fallback, parameters: { ...(s.fallback.parameters ?? {}) } } : null,
    extra: without(s, STEP_EDITED_KEYS),
  }));
  const laid = layout({ nodes });
  const allKnown = nodes.length > 0 && nodes.every((n) => positions[n.stepId]);
  if (!allKnown) return laid;
  return { nodes: laid.nodes.map((n) => ({ ...n, ...positions[n.stepId] })) };
}

/** Step id → position, to remember a layout next to a saved pipeline. */
export function positionsOf(graph: Graph): Record<string, { x: number; y: number }> {
  return Object.fromEntries(graph.nodes.map((n) => [n.stepId, { x: n.x, y: n.y }]));
}
