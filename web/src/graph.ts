// The pipeline on the canvas: steps as nodes with positions, dependencies as
// ordered lists (the first one listed hands its image on, as the engine
// does). Pure functions over immutable values, so the canvas, the tests and
// the save/load code share one model.

import type { Component, PipelineDefinition, RetryPolicy, StepDefinition } from './types';
import { defaultParams } from './params';

export interface GraphNode {
  uid: string;
  stepId: string;
  component: string;
  params: Record<string, unknown>;
  /** uids of the steps this one depends on, in order. */
  deps: string[];
  x: number;
  y: number;
  retry: RetryPolicy | null;
  continueOnFailure: boolean;
  timeoutSeconds: number | null;
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

/** Step id rules of the API (letters, digits, '-', '_', '.'; 1-128). */
export function stepIdError(graph: Graph, uid: string, stepId: string): string | null {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(stepId)) {
    return "use 1-128 letters, digits, '-', '_' or '.'";
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
}

export function toDefinition(graph: Graph, meta: PipelineMeta): PipelineDefinition {
  const byUid = new Map(graph.nodes.map((n) => [n.uid, n]));
  const steps: StepDefinition[] = graph.nodes.map((n) => {
    const step: StepDefinition = {
      stepId: n.stepId,
      componentName: n.component,
      dependencies: n.deps.map((d) => byUid.get(d)?.stepId ?? d),
      parameters: { ...n.params },
    };
    if (n.retry) step.retryPolicy = { ...n.retry };
    if (n.timeoutSeconds !== null) step.timeoutSeconds = n.timeoutSeconds;
    if (n.continueOnFailure) step.continueOnFailure = true;
    return step;
  });
  const definition: PipelineDefinition = {
    pipelineName: meta.pipelineName,
    version: meta.version,
    steps,
  };
  if (meta.pipelineId) definition.pipelineId = meta.pipelineId;
  if (meta.description) definition.metadata = { description: meta.description };
  return definition;
}

/**
 * The canvas for a stored definition: parameters the definition leaves out
 * show their registry defaults; positions from `positions` (by step id) when
 * known, else laid out by level.
 */
export function fromDefinition(
  definition: PipelineDefinition,
  components: Component[],
  positions: Record<string, { x: number; y: number }> = {},
): Graph {
  const uidOf = new Map(definition.steps.map((s) => [s.stepId, newUid()]));
  const nodes: GraphNode[] = definition.steps.map((s) => {
    const component = components.find((c) => c.name === s.componentName);
    return {
      uid: uidOf.get(s.stepId)!,
      stepId: s.stepId,
      component: s.componentName,
      params: { ...(component ? defaultParams(component) : {}), ...(s.parameters ?? {}) },
      deps: (s.dependencies ?? []).map((d) => uidOf.get(d) ?? d),
      x: 0,
      y: 0,
      retry: s.retryPolicy ? { ...s.retryPolicy } : null,
      continueOnFailure: Boolean(s.continueOnFailure),
      timeoutSeconds: s.timeoutSeconds ?? null,
    };
  });
  const laid = layout({ nodes });
  const allKnown = nodes.length > 0 && nodes.every((n) => positions[n.stepId]);
  if (!allKnown) return laid;
  return { nodes: laid.nodes.map((n) => ({ ...n, ...positions[n.stepId] })) };
}

/** Step id → position, to remember a layout next to a saved pipeline. */
export function positionsOf(graph: Graph): Record<string, { x: number; y: number }> {
  return Object.fromEntries(graph.nodes.map((n) => [n.stepId, { x: n.x, y: n.y }]));
}
