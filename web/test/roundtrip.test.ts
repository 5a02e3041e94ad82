import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fallbackOf, withGlobalText, withRetry } from '../src/editors';
import {
  fromDefinition,
  layout,
  metaFromDefinition,
  positionsOf,
  removeNode,
  toDefinition,
  updateNode,
  type Graph,
  type PipelineMeta,
} from '../src/graph';
import type { PipelineDefinition, StoredPipeline } from '../src/types';
import { definition, definitionOf, diff, paramValue, stored } from './definitions';
import { components } from './fixtures';

/** Open on the canvas: what CanvasPage.load does with a GET answer. */
function open(s: StoredPipeline | PipelineDefinition): { graph: Graph; meta: PipelineMeta } {
  return { graph: fromDefinition(s), meta: metaFromDefinition(s) };
}

const save = ({ graph, meta }: { graph: Graph; meta: PipelineMeta }) => toDefinition(graph, meta);

const runs = { numRuns: 300 };

describe('canvas round trip', () => {
  it('gives back a stored pipeline unchanged, as JSON values and as text', () => {
    fc.assert(
      fc.property(stored, (s) => {
        const back = save(open(s));
        expect(back).toEqual(definitionOf(s));
        // Same key order as the API writes, so even the text is the same.
        expect(JSON.stringify(back)).toBe(JSON.stringify(definitionOf(s)));
      }),
      runs,
    );
  });

  it('survives the draft being kept as JSON in sessionStorage', () => {
    fc.assert(
      fc.property(definition, (d) => {
        const draft = JSON.parse(JSON.stringify(open(d)));
        expect(save(draft)).toEqual(d);
      }),
      { numRuns: 100 },
    );
  });

  it('carries keys it has never heard of, at every level', () => {
    const unknown = fc.dictionary(
      fc.string({ minLength: 1 }).map((k) => `x-${k}`),
      fc.jsonValue({ maxDepth: 2 }),
      { minKeys: 1, maxKeys: 3 },
    );
    fc.assert(
      fc.property(definition, unknown, unknown, unknown, (d, top, meta, step) => {
        const withUnknown: PipelineDefinition = JSON.parse(
          JSON.stringify({
            ...d,
            ...top,
            metadata: { ...d.metadata, ...meta },
            steps: d.steps.map((s, i) => (i === 0 ? { ...s, ...step } : s)),
          }),
        );
        expect(save(open(withUnknown))).toEqual(withUnknown);
      }),
      { numRuns: 100 },
    );
  });

  it('keeps a key named __proto__ as a key', () => {
    const d: PipelineDefinition = JSON.parse(
      '{"pipelineName":"p","version":"1","metadata":{},' +
        '"steps":[{"stepId":"s","componentName":"filter","dependencies":[],"parameters":{},"__proto__":[3]}],' +
        '"globalParameters":{"__proto__":2},"__proto__":{"a":1}}',
    );
    const back = save(open(d));
    expect(JSON.stringify(back)).toBe(JSON.stringify(d));
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
  });

  it('keeps positions out of the definition: moving nodes or tidying changes nothing', () => {
    fc.assert(
      fc.property(stored, fc.nat(), fc.integer({ min: -500, max: 500 }), fc.integer({ min: -500, max: 500 }), (s, pick, dx, dy) => {
        const c = open(s);
        const node = c.graph.nodes[pick % c.graph.nodes.length];
        const moved = updateNode(c.graph, node.uid, { x: node.x + dx, y: node.y + dy });
        expect(positionsOf(moved)[node.stepId]).toEqual({ x: node.x + dx, y: node.y + dy });
        expect(save({ ...c, graph: moved })).toEqual(definitionOf(s));
        expect(save({ ...c, graph: layout(moved) })).toEqual(definitionOf(s));
        // Reopened where it was left (positions are kept by step id next to the pipeline).
        const reopened = fromDefinition(s, positionsOf(moved));
        expect(reopened.nodes.map((n) => [n.x, n.y])).toEqual(moved.nodes.map((n) => [n.x, n.y]));
      }),
      runs,
    );
  });
});

describe('only the user’s change', () => {
  const stepAndIndex = fc.tuple(definition, fc.nat());

  it('one parameter edited: that parameter, nothing else', () => {
    fc.assert(
      fc.property(
        stepAndIndex.chain(([d, pick]) => {
          const i = pick % d.steps.length;
          const component = components.find((c) => c.name === d.steps[i].componentName)!;
          return fc
            .constantFrom(...component.parameters)
            .chain((spec) => fc.tuple(fc.constant(d), fc.constant(i), fc.constant(spec.name), paramValue(spec)));
        }),
        ([d, i, name, value]) => {
          const c = open(d);
          const node = c.graph.nodes[i];
          fc.pre(JSON.stringify(node.params[name]) !== JSON.stringify(value));
          const graph = updateNode(c.graph, node.uid, { params: { ...node.params, [name]: value } });
          expect(diff(d, save({ ...c, graph }))).toEqual([`steps.${i}.parameters.${name}`]);
        },
      ),
      runs,
    );
  });

  it('failure handling edited: only that step’s field', () => {
    fc.assert(
      fc.property(
        stepAndIndex,
        fc.constantFrom('continue', 'retries', 'backoff', 'timeout', 'fallback'),
        fc.integer({ min: 1, max: 10 }),
        ([d, pick], what, n) => {
          const c = open(d);
          const i = pick % d.steps.length;
          const node = c.graph.nodes[i];
          const change = {
            continue: { continueOnFailure: !node.continueOnFailure },
            retries: { retry: withRetry(node.retry, 'maxRetries', String(n)) },
            backoff: { retry: withRetry(node.retry, 'backoffFactor', String(n)) },
            timeout: { timeoutSeconds: n * 7 },
            fallback: { fallback: fallbackOf(components[n % 3], components[n % 3].name) },
          }[what];
          const field = {
            continue: 'continueOnFailure',
            retries: 'retryPolicy',
            backoff: 'retryPolicy',
            timeout: 'timeoutSeconds',
            fallback: 'fallback',
          }[what];
          const changed = diff(d, save({ ...c, graph: updateNode(c.graph, node.uid, change) }));
          for (const path of changed) expect(path.startsWith(`steps.${i}.${field}`), path).toBe(true);
          // The edit shows unless it set what was already there.
          const before = JSON.stringify(d.steps[i][field]);
          const after = JSON.stringify(toDefinition(updateNode(c.graph, node.uid, change), c.meta).steps[i][field]);
          expect(changed.length > 0).toBe(before !== after);
        },
      ),
      runs,
    );
  });

  it('a step renamed: its id and the dependencies that name it', () => {
    fc.assert(
      fc.property(stepAndIndex, ([d, pick]) => {
        const c = open(d);
        const i = pick % d.steps.length;
        const old = d.steps[i].stepId;
        const graph = updateNode(c.graph, c.graph.nodes[i].uid, { stepId: 'renamed-step' });
        fc.pre(!d.steps.some((s) => s.stepId === 'renamed-step'));
        const expected = [
          `steps.${i}.stepId`,
          ...d.steps.flatMap((s, j) =>
            s.dependencies.flatMap((dep, k) => (dep === old ? [`steps.${j}.dependencies.${k}`] : [])),
          ),
        ];
        expect(diff(d, save({ ...c, graph })).sort()).toEqual(expected.sort());
      }),
      runs,
    );
  });

  it('a step removed: that step, and the dependencies on it', () => {
    fc.assert(
      fc.property(stepAndIndex, ([d, pick]) => {
        const c = open(d);
        const i = pick % d.steps.length;
        const gone = d.steps[i].stepId;
        const back = save({ ...c, graph: removeNode(c.graph, c.graph.nodes[i].uid) });
        const expected = d.steps
          .filter((_, j) => j !== i)
          .map((s) => ({ ...s, dependencies: s.dependencies.filter((x) => x !== gone) }));
        expect(back).toEqual({ ...d, steps: expected });
      }),
      runs,
    );
  });

  it('pipeline fields edited: only that field', () => {
    fc.assert(
      fc.property(definition, fc.string({ minLength: 1 }), (d, text) => {
        const c = open(d);
        const cases: [Partial<PipelineMeta>, string, unknown, unknown][] = [
          [
            { globalParameters: withGlobalText(c.meta.globalParameters, 'outputPath', text) },
            'globalParameters.outputPath',
            d.globalParameters?.outputPath,
            text,
          ],
          [{ description: text }, 'metadata.description', d.metadata?.description, text],
          [{ timeoutSeconds: text.length * 3 }, 'timeoutSeconds', d.timeoutSeconds, text.length * 3],
          [{ pipelineName: text }, 'pipelineName', d.pipelineName, text],
        ];
        for (const [change, path, was, now] of cases) {
          const changed = diff(d, save({ ...c, meta: { ...c.meta, ...change } }));
          expect(changed, path).toEqual(was === now ? [] : [path]);
        }
      }),
      runs,
    );
  });
});
