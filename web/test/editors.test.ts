import { describe, expect, it } from 'vitest';
import {
  fallbackLike,
  fallbackOf,
  globalText,
  nodeProblems,
  otherGlobals,
  parseNumber,
  parsePipelineExtra,
  parseStepExtra,
  pipelineExtraJson,
  pipelineTimeoutError,
  placeApiError,
  retryErrors,
  stepExtraJson,
  stepTimeoutError,
  withGlobalText,
  withOtherGlobals,
  withRetry,
} from '../src/editors';
import { addNode, emptyGraph, fromDefinition, metaFromDefinition, updateNode } from '../src/graph';
import type { PipelineDefinition } from '../src/types';
import { components } from './fixtures';

const [resize, detect, filter] = components;

describe('retry policy editor', () => {
  it('no retries at the default factor is no policy; anything else is one', () => {
    expect(withRetry(null, 'maxRetries', '3')).toEqual({ maxRetries: 3, backoffFactor: 2 });
    expect(withRetry({ maxRetries: 3, backoffFactor: 2 }, 'maxRetries', '0')).toBeNull();
    expect(withRetry({ maxRetries: 3, backoffFactor: 2 }, 'maxRetries', '')).toBeNull();
    // A factor the user chose is not thrown away with the retries.
    expect(withRetry({ maxRetries: 3, backoffFactor: 4 }, 'maxRetries', '0')).toEqual({ maxRetries: 0, backoffFactor: 4 });
    expect(withRetry({ maxRetries: 3, backoffFactor: 4 }, 'backoffFactor', '')).toEqual({ maxRetries: 3, backoffFactor: 2 });
    expect(withRetry({ maxRetries: 1, backoffFactor: 2 }, 'backoffFactor', '1.5')).toEqual({ maxRetries: 1, backoffFactor: 1.5 });
  });

  it('checks the ranges the engine checks', () => {
    expect(retryErrors(null)).toEqual({});
    expect(retryErrors({ maxRetries: 10, backoffFactor: 1 })).toEqual({});
    expect(retryErrors({ maxRetries: 11, backoffFactor: 2 }).maxRetries).toMatch(/0 to 10/);
    expect(retryErrors({ maxRetries: 1.5, backoffFactor: 2 }).maxRetries).toMatch(/whole/);
    expect(retryErrors({ maxRetries: 1, backoffFactor: 0.5 }).backoffFactor).toMatch(/1-10/);
    expect(retryErrors({ maxRetries: 1, backoffFactor: 'x' as unknown as number }).backoffFactor).toMatch(/1-10/);
  });
});

describe('timeouts', () => {
  it('parse a number field, keeping typos for the message', () => {
    expect(parseNumber('')).toBeUndefined();
    expect(parseNumber(' 2.5 ')).toBe(2.5);
    expect(parseNumber('2,5')).toBe('2,5');
  });

  it('bound a step attempt to an hour and a pipeline to positive', () => {
    expect(stepTimeoutError(null)).toBeNull();
    expect(stepTimeoutError(3600)).toBeNull();
    expect(stepTimeoutError(0)).toMatch(/more than 0/);
    expect(stepTimeoutError(3600.5)).toMatch(/3600/);
    expect(stepTimeoutError('2,5')).toMatch(/more than 0/);
    expect(pipelineTimeoutError(undefined)).toBeNull();
    expect(pipelineTimeoutError(86_400)).toBeNull();
    expect(pipelineTimeoutError(-1)).toMatch(/positive/);
    expect(pipelineTimeoutError(Infinity)).toMatch(/positive/);
  });
});

describe('fallback editor', () => {
  it('starts a chosen component from its defaults, or copies a step', () => {
    expect(fallbackOf(filter, 'filter')).toEqual({ componentName: 'filter', parameters: { filter_type: 'gaussian', intensity: 1 } });
    expect(fallbackOf(undefined, '')).toBeNull();
    const { node } = addNode(emptyGraph, resize);
    const edited = { ...node, params: { width: 320 } };
    expect(fallbackLike(edited)).toEqual({ componentName: 'resize', parameters: { width: 320 } });
    // A copy, not the step's own object.
    expect(fallbackLike(edited).parameters).not.toBe(edited.params);
  });

  it('its parameters are checked like a step’s', () => {
    const { graph, node } = addNode(emptyGraph, detect);
    const g = updateNode(graph, node.uid, { fallback: { componentName: 'resize', parameters: { width: -1 } } });
    expect(nodeProblems(g, g.nodes[0], components)).toEqual({ 'fallback.parameters.width': 'width must be at least 0' });
    const unknown = updateNode(graph, node.uid, { fallback: { componentName: 'sepia', parameters: {} } });
    expect(nodeProblems(unknown, unknown.nodes[0], components)).toEqual({ fallback: 'unknown component sepia' });
  });
});

describe('node problems', () => {
  it('collect every local check by the field it belongs to', () => {
    const { graph, node } = addNode(emptyGraph, resize);
    expect(nodeProblems(graph, node, components)).toEqual({});
    const bad = updateNode(graph, node.uid, {
      stepId: 'has space',
      params: { width: 'x' },
      retry: { maxRetries: 20, backoffFactor: 2 },
      timeoutSeconds: 0,
    });
    expect(Object.keys(nodeProblems(bad, bad.nodes[0], components)).sort()).toEqual([
      'parameters.width',
      'retryPolicy.maxRetries',
      'stepId',
      'timeoutSeconds',
    ]);
  });

  it('a parameter the definition leaves out is checked at its default', () => {
    const g = fromDefinition({
      pipelineName: 'p',
      version: '1',
      steps: [{ stepId: 'a', componentName: 'resize', dependencies: [], parameters: {} }],
    });
    expect(g.nodes[0].params).toEqual({});
    expect(nodeProblems(g, g.nodes[0], components)).toEqual({});
  });
});

describe('global parameters editor', () => {
  const globals = { inputPath: 's3://in/', outputPath: null, team: 'vision', limit: 3 };

  it('shows string path keys in their fields and the rest as JSON', () => {
    expect(globalText(globals, 'inputPath')).toBe('s3://in/');
    expect(globalText(globals, 'outputPath')).toBe('');
    expect(otherGlobals(globals)).toEqual({ outputPath: null, team: 'vision', limit: 3 });
  });

  it('a field sets its key; emptied, it removes it', () => {
    expect(withGlobalText(globals, 'outputPath', 'out/')).toEqual({ ...globals, outputPath: 'out/' });
    const { inputPath: _gone, ...rest } = globals;
    expect(withGlobalText(globals, 'inputPath', '')).toEqual(rest);
    expect(withGlobalText(undefined, 'executionId', 'e1')).toEqual({ executionId: 'e1' });
  });

  it('the JSON part replaces the other keys and keeps the fields’ ones', () => {
    expect(withOtherGlobals(globals, '{"team": "ml"}')).toEqual({ value: { inputPath: 's3://in/', team: 'ml' } });
    expect(withOtherGlobals(globals, '')).toEqual({ value: { inputPath: 's3://in/' } });
    expect(withOtherGlobals(globals, '{"outputPath": "x"}').error).toMatch(/own field/);
    expect(withOtherGlobals(globals, '{"outputPath": 3}').error).toMatch(/must be a string/);
    expect(withOtherGlobals(globals, '{"inputPath": null}').error).toMatch(/set in its field/);
    expect(withOtherGlobals(globals, '[1]').error).toMatch(/JSON object/);
    expect(withOtherGlobals(globals, '{team').error).toMatch(/not JSON/);
  });
});

describe('fields without an editor', () => {
  const definition: PipelineDefinition = {
    pipelineId: 'p1',
    pipelineName: 'p',
    version: '1.0.0',
    metadata: { createdBy: 'ana', createdAt: '2026-12-01', description: 'd' },
    steps: [
      {
        stepId: 'a',
        componentName: 'resize',
        componentVersion: '1.0.0',
        dependencies: [],
        parameters: {},
        resources: { cpu: '1', gpu: 1 },
      },
    ],
    globalParameters: {},
    owner: 'team-x',
  };

  it('a step’s are shown as JSON and replaced from JSON, never its edited keys', () => {
    const node = fromDefinition(definition).nodes[0];
    expect(JSON.parse(stepExtraJson(node))).toEqual({ componentVersion: '1.0.0', resources: { cpu: '1', gpu: 1 } });
    expect(parseStepExtra('{"componentVersion": "2.0.0"}')).toEqual({ value: { componentVersion: '2.0.0' } });
    expect(parseStepExtra('{"stepId": "b", "fallback": null}').error).toMatch(/stepId, fallback have an editor/);
  });

  it('the pipeline’s: metadata less the description, and unknown keys; not what the server keeps', () => {
    const meta = metaFromDefinition({ ...definition, revision: 3, createdAt: 'x', updatedAt: 'y' } as PipelineDefinition);
    expect(JSON.parse(pipelineExtraJson(meta))).toEqual({ metadata: { createdBy: 'ana', createdAt: '2026-12-01' }, owner: 'team-x' });
    expect(parsePipelineExtra('{"metadata": {"createdBy": "bo"}, "owner": "y"}')).toEqual({
      value: { metadata: { createdBy: 'bo' }, extra: { owner: 'y' } },
    });
    expect(parsePipelineExtra('{"metadata": {"description": "x"}}').error).toMatch(/description/);
    expect(parsePipelineExtra('{"revision": 2}').error).toMatch(/revision cannot/);
    expect(parsePipelineExtra('{"steps": []}').error).toMatch(/steps cannot/);
    expect(parsePipelineExtra('{"metadata": 1}').error).toMatch(/metadata must/);
  });
});

describe('API refusals placed on the field at fault', () => {
  // Messages as crates/imageflow-pipeline/src/{dag,registry}.rs and axum word them.
  const cases: [string, string | null, string | null, string][] = [
    ['step "a": retryPolicy.maxRetries must be 0-10', 'a', 'a', 'retryPolicy.maxRetries'],
    ['step "a": retryPolicy.backoffFactor must be 1-10', 'a', 'a', 'retryPolicy.backoffFactor'],
    ['step "a": timeoutSeconds must be between 0 and 3600', 'a', 'a', 'timeoutSeconds'],
    ['step "a": parameter "width" must be between 0 and 16384, got -1', 'a', 'a', 'parameters.width'],
    ['step "a": width and height are both 0: give at least one', 'a', 'a', 'parameters.width'],
    ['step "a": unknown parameter "colour" for resize; accepted: width, height', 'a', 'a', 'parameters'],
    ['step "a": fallback: parameter "intensity" must be between 0 and 100, got 200', 'a', 'a', 'fallback.parameters.intensity'],
    ['step "a": fallback: unknown component "sepia"; known: resize, ai_detection, filter', 'a', 'a', 'fallback'],
    ['step "a": unknown component "sepia"; known: resize, ai_detection, filter', 'a', 'a', 'parameters'],
    ['step "a": depends on unknown step "zz"', 'a', 'a', 'dependencies'],
    ['cycle in dependencies: a -> b -> a', 'a', 'a', 'dependencies'],
    ['step "a": duplicate stepId', 'a', 'a', 'stepId'],
    ['stepId "has space" must be 1-64 characters of letters, digits, \'-\', \'_\' or \'.\'', 'has space', 'has space', 'stepId'],
    ['timeoutSeconds must be a positive number', null, null, 'timeoutSeconds'],
    ['globalParameters.inputPath must be a string (got a number); it is kept with the pipeline', null, null, 'globalParameters.inputPath'],
    ['pipelineName must not be empty', null, null, 'pipelineName'],
    ['a pipeline needs at least one step', null, null, 'steps'],
  ];
  for (const [message, stepId, atStep, field] of cases) {
    it(message, () => {
      expect(placeApiError(message, stepId)).toEqual({ stepId: atStep, field });
    });
  }

  it('a body the server could not read: its JSON path, through the definition sent', () => {
    const sent = {
      pipelineName: 'p',
      version: '1',
      steps: [
        { stepId: 'a', componentName: 'resize', dependencies: [], parameters: {} },
        { stepId: 'b', componentName: 'resize', dependencies: [], parameters: {} },
      ],
    };
    const body = 'malformed JSON body: Failed to deserialize the JSON body into the target type: ';
    expect(
      placeApiError(`${body}steps[1].retryPolicy.maxRetries: invalid type: floating point \`1.5\`, expected u32 at line 1 column 9`, null, sent),
    ).toEqual({ stepId: 'b', field: 'retryPolicy.maxRetries' });
    expect(placeApiError(`${body}timeoutSeconds: invalid type: string "x", expected f64 at line 1 column 9`, null, sent)).toEqual({
      stepId: null,
      field: 'timeoutSeconds',
    });
    expect(placeApiError(`${body}missing field \`steps\` at line 1 column 9`, null, sent)).toEqual({ stepId: null, field: 'steps' });
  });
});
