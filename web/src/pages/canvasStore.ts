// The canvas's working copy survives page changes (module state) and reloads
// of the tab (sessionStorage); node positions of saved pipelines are kept in
// localStorage by pipeline id, since the API stores only the DAG.

import type { Graph, PipelineMeta } from '../graph';
import type { PipelineDefinition } from '../types';
import { emptyGraph } from '../graph';

export interface CanvasMeta extends PipelineMeta {
  revision?: number;
  latestRevision?: number;
}

export interface CanvasDraft {
  graph: Graph;
  meta: CanvasMeta;
  dirty: boolean;
  selectedFiles: string[];
  /** Executions started here: one per run, however many images it took. */
  runs: { executionId: string; fileIds: string[]; label: string; definition: PipelineDefinition }[];
  watching: string | null;
}

const KEY = 'imageflow.canvasDraft';
const POSITIONS = 'imageflow.positions.';

function initial(): CanvasDraft {
  try {
    const saved = sessionStorage.getItem(KEY);
    if (saved) {
      const d = JSON.parse(saved) as CanvasDraft;
      // Drafts from before fallbacks and kept fields: nodes without them.
      // Runs from before several inputs (one file each): dropped, the executions page lists them.
      return {
        ...d,
        graph: { nodes: d.graph.nodes.map((n) => ({ ...n, fallback: n.fallback ?? null, extra: n.extra ?? {} })) },
        runs: d.runs.filter((r) => Array.isArray(r.fileIds)),
      };
    }
  } catch {
    // A draft from another version: start fresh.
  }
  return {
    graph: emptyGraph,
    meta: { pipelineName: 'untitled pipeline', version: '1.0.0' },
    dirty: false,
    selectedFiles: [],
    runs: [],
    watching: null,
  };
}

let draft: CanvasDraft | null = null;

export function loadDraft(): CanvasDraft {
  draft ??= initial();
  return draft;
}

export function saveDraft(next: CanvasDraft): void {
  draft = next;
  try {
    sessionStorage.setItem(KEY, JSON.stringify(next));
  } catch {
    // Storage full or disabled: the module copy still holds it.
  }
}

export function savePositions(pipelineId: string, positions: Record<string, { x: number; y: number }>): void {
  try {
    localStorage.setItem(POSITIONS + pipelineId, JSON.stringify(positions));
  } catch {
    // Not essential: the layout falls back to levels.
  }
}

export function loadPositions(pipelineId: string): Record<string, { x: number; y: number }> {
  try {
    return JSON.parse(localStorage.getItem(POSITIONS + pipelineId) ?? '{}');
  } catch {
    return {};
  }
}
