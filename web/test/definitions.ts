// Pipeline definitions as the API stores and returns them, for property tests.
// Shaped on crates/imageflow-pipeline/src: model.rs (serde's output: absent
// options and a false continueOnFailure are left out, `dependencies`,
// `parameters`, `metadata`, `globalParameters` and a retry policy's two
// fields are always there, unknown keys are dropped) and the checks of
// dag.rs and registry.rs (id rules, an acyclic DAG, parameters in range,
// retries 0-10, backoff 1-10, step timeouts up to an hour, string path keys).

import fc from 'fast-check';
import type { Component, PipelineDefinition, StepDefinition, StoredPipeline } from '../src/types';
import { components } from './fixtures';

const optional = { requiredKeys: [] as never[] };

/** A valid value of one registry parameter; enum values in any case (the registry lowercases them). */
export function paramValue(spec: Component['parameters'][number]): fc.Arbitrary<unknown> {
  switch (spec.type) {
    case 'integer':
      return fc.integer({ min: spec.minimum ?? 0, max: spec.maximum ?? 1000 });
    case 'number':
      return fc.double({ min: spec.minimum ?? 0, max: spec.maximum ?? 1, noNaN: true });
    case 'boolean':
      return fc.boolean();
    case 'string':
      return fc.string({ minLength: 1, maxLength: spec.max_length ?? 16 });
    case 'enum':
      return fc
        .tuple(fc.constantFrom(...(spec.values ?? [])), fc.boolean())
        .map(([v, upper]) => (upper ? v.toUpperCase() : v));
  }
}

/** Some of a component's parameters (the rest run with their defaults). */
export function params(component: Component): fc.Arbitrary<Record<string, unknown>> {
  const shape = Object.fromEntries(component.parameters.map((p) => [p.name, paramValue(p)]));
  return fc.record(shape, optional).filter((p) => {
    if (component.name !== 'resize') return true;
    // The registry refuses a resize to 0×0 (defaults 800×600).
    return (p.width ?? 800) !== 0 || (p.height ?? 600) !== 0;
  });
}

const stepId = fc.stringMatching(/^[A-Za-z0-9._-]{1,64}$/);
const pipelineId = fc.stringMatching(/^[A-Za-z0-9._-]{1,128}$/);
const json = fc.jsonValue({ maxDepth: 2 });

const resources = fc.oneof(
  fc.record({ cpu: fc.constantFrom('500m', '1', '2'), memory: fc.constantFrom('512Mi', '1Gi'), gpu: fc.nat(2) }, optional),
  json.filter((v) => v !== null),
);

const fallback = fc
  .constantFrom(...components)
  .chain((c) => fc.record({ componentName: fc.constant(c.name), parameters: params(c) }));

function step(id: string, earlier: string[]): fc.Arbitrary<StepDefinition> {
  return fc.constantFrom(...components).chain((c) =>
    fc.record(
      {
        stepId: fc.constant(id),
        componentName: fc.constant(c.name),
        componentVersion: fc.constantFrom('1.0.0', '2.1.0', 'latest'),
        // The first one listed hands its image on: the order matters and is kept.
        dependencies: fc.shuffledSubarray(earlier),
        parameters: params(c),
        resources,
        retryPolicy: fc.record({
          maxRetries: fc.integer({ min: 0, max: 10 }),
          backoffFactor: fc.double({ min: 1, max: 10, noNaN: true }),
        }),
        timeoutSeconds: fc.double({ min: 0, max: 3600, minExcluded: true, noNaN: true }),
        continueOnFailure: fc.constant(true),
        fallback,
      },
      { requiredKeys: ['stepId', 'componentName', 'dependencies', 'parameters'] },
    ),
  ) as fc.Arbitrary<StepDefinition>;
}

/** Steps of an acyclic DAG, listed in any order (the API does not ask for a topological one). */
const steps = fc
  .uniqueArray(stepId, { minLength: 1, maxLength: 8 })
  .chain((ids) => fc.tuple(...ids.map((id, i) => step(id, ids.slice(0, i)))))
  .chain((list) => fc.shuffledSubarray(list, { minLength: list.length, maxLength: list.length }));

const pathValue = fc.oneof(fc.string(), fc.constant('s3://bucket/prefix/'), fc.constant(null));

const globalParameters = fc
  .tuple(
    fc.record({ inputPath: pathValue, outputPath: pathValue, executionId: pathValue }, optional),
    fc.dictionary(
      fc.string().filter((k) => !['inputPath', 'outputPath', 'executionId'].includes(k)),
      json,
      { maxKeys: 3 },
    ),
  )
  .map(([known, other]) => ({ ...other, ...known }));

export const definition: fc.Arbitrary<PipelineDefinition> = fc
  .record(
    {
      pipelineId,
      pipelineName: fc.string({ minLength: 1 }).filter((s) => s.trim() !== ''),
      version: fc.oneof(fc.constant('1.0.0'), fc.string()),
      metadata: fc.record({ createdBy: fc.string(), createdAt: fc.constant('2026-12-01T10:00:00Z'), description: fc.string() }, optional),
      steps,
      globalParameters,
      timeoutSeconds: fc.double({ min: 0, max: 86_400, minExcluded: true, noNaN: true }),
    },
    { requiredKeys: ['pipelineId', 'pipelineName', 'version', 'metadata', 'steps', 'globalParameters'] },
  )
  // As a client receives it: through JSON (no -0, no null-prototype objects).
  .map((d) => JSON.parse(JSON.stringify(d)) as PipelineDefinition);

/** GET /v1/pipelines/{id}: the definition with what the server keeps about it. */
export const stored: fc.Arbitrary<StoredPipeline> = fc
  .tuple(definition, fc.integer({ min: 1, max: 50 }))
  .map(([d, revision]) => ({
    ...(d as PipelineDefinition & { pipelineId: string }),
    revision,
    createdAt: '2026-12-01T10:00:00Z',
    updatedAt: '2026-12-02T11:00:00Z',
  }));

/** The definition part of a stored pipeline: what a PUT sends back. */
export function definitionOf(s: StoredPipeline): PipelineDefinition {
  const { revision: _r, createdAt: _c, updatedAt: _u, ...d } = s;
  return d;
}

/** Paths (`steps.0.parameters.width`) where two JSON values differ. */
export function diff(a: unknown, b: unknown, path = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
  if (isObject(a) && isObject(b) && Array.isArray(a) === Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => diff(a[k], b[k], path ? `${path}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path];
}
