import { useRef, useState } from 'preact/hooks';
import type { Graph, GraphNode } from '../graph';
import { edges, NODE_HEIGHT, NODE_WIDTH } from '../graph';
import { fmtMs } from '../format';
import { defaultParams } from '../params';
import type { NodeRun } from '../progress';
import type { Component } from '../types';
import { StatusBadge } from './StatusBadge';

export type Selection = { type: 'node'; uid: string } | { type: 'edge'; from: string; to: string } | null;

interface Props {
  graph: Graph;
  /** The registry, for the defaults of parameters a step leaves out. */
  components: Component[];
  selection: Selection;
  /** API or client errors by node uid. */
  errors: Record<string, string>;
  invalid: Set<string>;
  /** The watched execution's steps, by step id (see nodeRuns). */
  steps: Map<string, NodeRun>;
  onSelect: (s: Selection) => void;
  onMove: (uid: string, x: number, y: number, done: boolean) => void;
  onConnect: (from: string, to: string) => void;
  onDisconnect: (from: string, to: string) => void;
  onRemove: (uid: string) => void;
  boardRef: { current: HTMLDivElement | null };
}

function edgePath(x1: number, y1: number, x2: number, y2: number): string {
  const dx = Math.max(40, Math.abs(x2 - x1) / 2);
  return `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`;
}

const outPort = (n: GraphNode) => ({ x: n.x + NODE_WIDTH, y: n.y + NODE_HEIGHT / 2 });
const inPort = (n: GraphNode) => ({ x: n.x, y: n.y + NODE_HEIGHT / 2 });

/**
 * The canvas: nodes placed absolutely, edges as SVG under them. Pointer
 * drags move nodes and draw edges (output port → another step); the keyboard
 * does the same through focus, arrows and Delete (and the inspector).
 */
export function Board(props: Props) {
  const { graph, components, selection, errors, invalid, steps } = props;
  const inner = useRef<HTMLDivElement>(null);
  const [link, setLink] = useState<{ from: string; x: number; y: number; over: string | null } | null>(null);
  const byUid = new Map(graph.nodes.map((n) => [n.uid, n]));

  const toCanvas = (clientX: number, clientY: number) => {
    const r = inner.current!.getBoundingClientRect();
    return { x: clientX - r.left, y: clientY - r.top };
  };
  const nodeAt = (clientX: number, clientY: number): string | null => {
    const el = document.elementFromPoint(clientX, clientY);
    const node = el?.closest<HTMLElement>('.node[data-uid]');
    return node?.dataset.uid ?? null;
  };

  const startMove = (e: PointerEvent, node: GraphNode) => {
    if (e.button !== 0 || (e.target as Element).closest('.port')) return;
    const start = toCanvas(e.clientX, e.clientY);
    let moved = false;
    const move = (ev: PointerEvent) => {
      const p = toCanvas(ev.clientX, ev.clientY);
      const dx = p.x - start.x;
      const dy = p.y - start.y;
      if (!moved && Math.hypot(dx, dy) < 4) return;
      moved = true;
      props.onMove(node.uid, Math.max(0, node.x + dx), Math.max(0, node.y + dy), false);
    };
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      if (moved) {
        const p = toCanvas(ev.clientX, ev.clientY);
        props.onMove(node.uid, Math.max(0, node.x + p.x - start.x), Math.max(0, node.y + p.y - start.y), true);
      } else props.onSelect({ type: 'node', uid: node.uid });
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  };

  const startLink = (e: PointerEvent, node: GraphNode) => {
    if (e.button !== 0) return;
    e.preventDefault();
    e.stopPropagation();
    const p = toCanvas(e.clientX, e.clientY);
    setLink({ from: node.uid, ...p, over: null });
    const move = (ev: PointerEvent) => {
      const q = toCanvas(ev.clientX, ev.clientY);
      const over = nodeAt(ev.clientX, ev.clientY);
      setLink({ from: node.uid, ...q, over: over !== node.uid ? over : null });
    };
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      setLink(null);
      const target = nodeAt(ev.clientX, ev.clientY);
      if (target && target !== node.uid) props.onConnect(node.uid, target);
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  };

  const nodeKey = (e: KeyboardEvent, node: GraphNode) => {
    const step = e.shiftKey ? 50 : 10;
    const moves: Record<string, [number, number]> = {
      ArrowLeft: [-step, 0],
      ArrowRight: [step, 0],
      ArrowUp: [0, -step],
      ArrowDown: [0, step],
    };
    if (moves[e.key]) {
      e.preventDefault();
      const [dx, dy] = moves[e.key];
      props.onMove(node.uid, Math.max(0, node.x + dx), Math.max(0, node.y + dy), true);
    } else if (e.key === 'Delete' || e.key === 'Backspace') {
      e.preventDefault();
      props.onRemove(node.uid);
    } else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      props.onSelect({ type: 'node', uid: node.uid });
    }
  };

  const width = Math.max(...graph.nodes.map((n) => n.x + NODE_WIDTH + 80), 600);
  const height = Math.max(...graph.nodes.map((n) => n.y + NODE_HEIGHT + 90), 380);
  const from = link ? byUid.get(link.from) : undefined;

  return (
    <div
      class="board"
      ref={(el) => {
        props.boardRef.current = el;
      }}
      data-dropzone="canvas"
      onPointerDown={(e) => {
        if (e.target === e.currentTarget || (e.target as Element).classList.contains('board-inner')) {
          props.onSelect(null);
        }
      }}
    >
      <div class="board-inner" ref={inner} style={{ width: `${width}px`, height: `${height}px` }}>
        <svg class="edges" width={width} height={height} aria-label="dependencies">
          <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
              <path d="M 0 0 L 10 5 L 0 10 z" class="arrow-head" />
            </marker>
          </defs>
          {edges(graph).map((edge) => {
            const a = byUid.get(edge.from);
            const b = byUid.get(edge.to);
            if (!a || !b) return null;
            const p = outPort(a);
            const q = inPort(b);
            const d = edgePath(p.x, p.y, q.x, q.y);
            const selected = selection?.type === 'edge' && selection.from === edge.from && selection.to === edge.to;
            return (
              <g
                key={`${edge.from}->${edge.to}`}
                class={`edge${selected ? ' selected' : ''}`}
                data-edge={`${a.stepId}->${b.stepId}`}
                tabindex={0}
                role="button"
                aria-label={`dependency: ${b.stepId} takes ${a.stepId}${edge.index === 0 ? ' (image source)' : ''}. Delete removes it.`}
                onPointerDown={(e) => {
                  e.stopPropagation();
                  props.onSelect({ type: 'edge', from: edge.from, to: edge.to });
                }}
                onKeyDown={(e) => {
                  if (e.key === 'Delete' || e.key === 'Backspace') {
                    e.preventDefault();
                    props.onDisconnect(edge.from, edge.to);
                  } else if (e.key === 'Enter' || e.key === ' ') {
                    e.preventDefault();
                    props.onSelect({ type: 'edge', from: edge.from, to: edge.to });
                  }
                }}
              >
                <path d={d} class="edge-hit" />
                <path d={d} class="edge-line" marker-end="url(#arrow)" />
              </g>
            );
          })}
          {link && from && (
            <path
              class="edge-draft"
              d={edgePath(outPort(from).x, outPort(from).y, link.x, link.y)}
              marker-end="url(#arrow)"
            />
          )}
        </svg>
        {graph.nodes.map((node) => {
          const step = steps.get(node.stepId);
          const status = step?.status;
          const error = errors[node.uid];
          const selected = selection?.type === 'node' && selection.uid === node.uid;
          return (
            <div
              key={node.uid}
              class={`node comp-${node.component}${selected ? ' selected' : ''}${status ? ` st-${status}` : ''}${
                error ? ' has-error' : ''
              }${link?.over === node.uid ? ' link-target' : ''}`}
              data-uid={node.uid}
              data-step-id={node.stepId}
              data-status={status ?? 'idle'}
              style={{ left: `${node.x}px`, top: `${node.y}px`, width: `${NODE_WIDTH}px`, height: `${NODE_HEIGHT}px` }}
              tabIndex={0}
              role="group"
              aria-label={`step ${node.stepId}, ${node.component}${status ? `, ${status}` : ''}${
                step?.progress ? `, ${step.progress}` : ''
              }${error ? `, error: ${error}` : ''}`}
              aria-describedby={error ? `err-${node.uid}` : undefined}
              onPointerDown={(e) => startMove(e, node)}
              onKeyDown={(e) => nodeKey(e, node)}
            >
              <span class="port in" data-port="in" aria-hidden="true" title="input: drop a connection here" />
              <div class="node-head">
                <span class="node-title">{node.stepId}</span>
                <span class="node-component">{node.component}</span>
              </div>
              <div class="node-body">
                {step ? (
                  <>
                    <StatusBadge status={step.status} attempts={step.attempts} />
                    {step.processing_time_ms !== null && step.processing_time_ms !== undefined && (
                      <span class="node-time" data-time>
                        {fmtMs(step.processing_time_ms)}
                      </span>
                    )}
                    {step.progress && (
                      <span class="node-progress" data-progress>
                        {step.progress}
                      </span>
                    )}
                  </>
                ) : (
                  <span class="muted">{invalid.has(node.uid) ? '⚠ check settings' : summary(node, components)}</span>
                )}
              </div>
              <span
                class="port out"
                data-port="out"
                title="drag to another step to make it depend on this one"
                aria-hidden="true"
                onPointerDown={(e) => startLink(e, node)}
              />
              {error && (
                <div class="node-error" id={`err-${node.uid}`} role="alert">
                  {error}
                </div>
              )}
            </div>
          );
        })}
        {graph.nodes.length === 0 && (
          <div class="board-empty">
            <p>
              <strong>The canvas is empty.</strong>
            </p>
            <p>Add steps from the palette (click, or drag one here), then drag from a step's right-hand port to another step to connect them.</p>
          </div>
        )}
      </div>
    </div>
  );
}

function summary(node: GraphNode, components: Component[]): string {
  const component = components.find((c) => c.name === node.component);
  const p = { ...(component ? defaultParams(component) : {}), ...node.params };
  switch (node.component) {
    case 'resize':
      return `${p.width}×${p.height}${p.maintain_aspect_ratio ? ' fit' : ''}`;
    case 'ai_detection':
      return `${p.model_name} ≥ ${p.confidence_threshold}`;
    case 'filter':
      return `${p.filter_type} ${p.intensity}`;
    default:
      return '';
  }
}
