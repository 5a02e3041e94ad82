import { describe, expect, it } from 'vitest';
import {
  addNode,
  connect,
  disconnect,
  edges,
  emptyGraph,
  fromDefinition,
  levels,
  removeNode,
  stepIdError,
  toDefinition,
  uniqueStepId,
} from '../src/graph';
import { components } from './fixtures';

const [resize, detect, filter] = components;

function pipeline() {
  let g = emptyGraph;
  const a = addNode(g, resize);
  g = a.graph;
  const b = addNode(g, detect);
  g = b.graph;
  const c = addNode(g, filter);
  g = c.graph;
  g = connect(g, a.node.uid, b.node.uid).graph;
  g = connect(g, b.node.uid, c.node.uid).graph;
  return { g, a: a.node, b: b.node, c: c.node };
}

describe('graph', () => {
  it('names steps after their component, uniquely', () => {
    let g = emptyGraph;
    g = addNode(g, resize).graph;
    expect(uniqueStepId(g, 'resize')).toBe('resize-2');
    expect(uniqueStepId(g, 'ai_detection')).toBe('detect');
  });

  it('places clicked nodes on free grid cells with registry defaults', () => {
    const { g } = pipeline();
    const spots = new Set(g.nodes.map((n) => `${n.x},${n.y}`));
    expect(spots.size).toBe(3);
    expect(g.nodes[0].params).toEqual({ width: 800, height: 600, maintain_aspect_ratio: true, quality: 'good' });
  });

  it('turns edges into ordered dependencies and back', () => {
    const { g, a, b, c } = pipeline();
    expect(edges(g)).toEqual([
      { from: a.uid, to: b.uid, index: 0 },
      { from: b.uid, to: c.uid, index: 0 },
    ]);
    const def = toDefinition(g, { pipelineName: 'p', version: '1.0.0' });
    expect(def.steps.map((s) => [s.stepId, s.dependencies])).toEqual([
      ['resize', []],
      ['detect', ['resize']],
      ['filter', ['detect']],
    ]);
    expect(def.pipelineId).toBeUndefined();
    const back = fromDefinition(def);
    expect(toDefinition(back, { pipelineName: 'p', version: '1.0.0' })).toEqual(def);
    expect(back.nodes.map((n) => n.x)).toEqual([32, 282, 532]);
  });

  it('refuses self-edges and duplicates but lets a cycle through to the API', () => {
    const { g, a, c } = pipeline();
    expect(connect(g, a.uid, a.uid).error).toMatch(/itself/);
    expect(connect(g, a.uid, g.nodes[1].uid).graph).toEqual(g);
    const cyclic = connect(g, c.uid, a.uid);
    expect(cyclic.error).toBeUndefined();
    expect(cyclic.graph.nodes[0].deps).toEqual([c.uid]);
    // Levels still terminate on a cycle.
    expect(levels(cyclic.graph).size).toBe(3);
    expect(disconnect(cyclic.graph, c.uid, a.uid)).toEqual(g);
  });

  it('computes the engine levels', () => {
    const { g, a, b, c } = pipeline();
    const l = levels(g);
    expect([l.get(a.uid), l.get(b.uid), l.get(c.uid)]).toEqual([0, 1, 2]);
  });

  it('removing a step removes the edges to it', () => {
    const { g, b, c } = pipeline();
    const after = removeNode(g, b.uid);
    expect(after.nodes.find((n) => n.uid === c.uid)?.deps).toEqual([]);
  });

  it('checks step ids like the API', () => {
    const { g, a } = pipeline();
    expect(stepIdError(g, a.uid, 'resize')).toBeNull();
    expect(stepIdError(g, a.uid, 'detect')).toMatch(/already/);
    expect(stepIdError(g, a.uid, 'has space')).toMatch(/letters/);
    // dag.rs allows 64 characters (pipeline ids may have 128).
    expect(stepIdError(g, a.uid, 'x'.repeat(64))).toBeNull();
    expect(stepIdError(g, a.uid, 'x'.repeat(65))).toMatch(/1-64/);
  });

  it('keeps remembered positions when every step has one', () => {
    const def = toDefinition(pipeline().g, { pipelineName: 'p', version: '1' });
    const g = fromDefinition(def, {
      resize: { x: 5, y: 6 },
      detect: { x: 7, y: 8 },
      filter: { x: 9, y: 10 },
    });
    expect(g.nodes.map((n) => [n.x, n.y])).toEqual([
      [5, 6],
      [7, 8],
      [9, 10],
    ]);
  });
});
