import type { Graph, GraphNode } from '../graph';
import {
  fallbackLike,
  fallbackOf,
  MAX_STEP_TIMEOUT_SECONDS,
  nodeProblems,
  parseNumber,
  parseStepExtra,
  stepExtraJson,
  withRetry,
} from '../editors';
import { inputStep, parseInput } from '../params';
import type { Component, ParamSpec } from '../types';
import { JsonEditor } from './JsonEditor';

interface Props {
  graph: Graph;
  node: GraphNode;
  components: Component[];
  /** The API's refusal of this step, by field ('' for the step as a whole). */
  serverErrors: Record<string, string>;
  onChange: (change: Partial<GraphNode>) => void;
  onRemove: () => void;
}

function FieldError({ id, error }: { id: string; error?: string }) {
  return error ? (
    <small id={id} class="field-error" role="alert">
      {error}
    </small>
  ) : null;
}

function ParamField({
  spec,
  value,
  error,
  id,
  label,
  param,
  onChange,
}: {
  spec: ParamSpec;
  value: unknown;
  error?: string;
  id: string;
  label: string;
  param: string;
  onChange: (v: unknown) => void;
}) {
  const help = `${id}-help`;
  const err = `${id}-err`;
  const described = error ? `${help} ${err}` : help;
  let control;
  if (spec.type === 'boolean') {
    control = (
      <input
        id={id}
        type="checkbox"
        checked={Boolean(value)}
        aria-describedby={described}
        onChange={(e) => onChange((e.target as HTMLInputElement).checked)}
      />
    );
  } else if (spec.type === 'enum') {
    control = (
      <select
        id={id}
        // The registry takes any case ("SHARPEN"); show the option it means.
        value={String(value).toLowerCase()}
        aria-describedby={described}
        aria-invalid={error ? 'true' : undefined}
        onChange={(e) => onChange((e.target as HTMLSelectElement).value)}
      >
        {(spec.values ?? []).map((v) => (
          <option key={v} value={v}>
            {v}
          </option>
        ))}
      </select>
    );
  } else if (spec.type === 'integer' || spec.type === 'number') {
    control = (
      <input
        id={id}
        type="number"
        inputMode={spec.type === 'integer' ? 'numeric' : 'decimal'}
        min={spec.minimum}
        max={spec.maximum}
        step={inputStep(spec)}
        value={value === undefined || value === null ? '' : String(value)}
        aria-describedby={described}
        aria-invalid={error ? 'true' : undefined}
        onInput={(e) => onChange(parseInput(spec, (e.target as HTMLInputElement).value))}
      />
    );
  } else {
    control = (
      <input
        id={id}
        type="text"
        maxLength={spec.max_length}
        value={String(value ?? '')}
        aria-describedby={described}
        aria-invalid={error ? 'true' : undefined}
        onInput={(e) => onChange((e.target as HTMLInputElement).value)}
      />
    );
  }
  const range =
    spec.minimum !== undefined && spec.maximum !== undefined ? ` (${spec.minimum}–${spec.maximum})` : '';
  return (
    <div class={`field${spec.type === 'boolean' ? ' field-check' : ''}`} data-param={param}>
      <label for={id}>{label}</label>
      {control}
      <small id={help} class="muted">
        {spec.description}
        {range}; default {JSON.stringify(spec.default)}
      </small>
      {error && (
        <small id={err} class="field-error" role="alert">
          {error}
        </small>
      )}
    </div>
  );
}

/** The registry's form for a set of parameters; a parameter left out shows its default. */
function ParamForm({
  component,
  params,
  errors,
  base,
  prefix,
  onChange,
}: {
  component: Component;
  params: Record<string, unknown>;
  errors: Record<string, string>;
  base: string;
  /** '' for the step's own parameters, 'fallback' for its fallback's. */
  prefix: string;
  onChange: (params: Record<string, unknown>) => void;
}) {
  return (
    <>
      {component.parameters.map((spec) => (
        <ParamField
          key={spec.name}
          spec={spec}
          id={`${base}-${prefix ? `${prefix}-` : ''}${spec.name}`}
          label={prefix ? `${prefix} ${spec.name}` : spec.name}
          param={prefix ? `${prefix}.${spec.name}` : spec.name}
          value={params[spec.name] ?? spec.default}
          error={errors[`${prefix ? `${prefix}.` : ''}parameters.${spec.name}`]}
          onChange={(v) => onChange({ ...params, [spec.name]: v })}
        />
      ))}
    </>
  );
}

/** The selected step: its id, parameter form, dependencies, failure handling, kept fields. */
export function Inspector({ graph, node, components, serverErrors, onChange, onRemove }: Props) {
  // The server's word on a field wins over the local check: it is what refused the save.
  const errors = { ...nodeProblems(graph, node, components), ...serverErrors };
  const component = components.find((c) => c.name === node.component);
  const byUid = new Map(graph.nodes.map((n) => [n.uid, n]));
  const candidates = graph.nodes.filter((n) => n.uid !== node.uid && !node.deps.includes(n.uid));
  const others = graph.nodes.filter((n) => n.uid !== node.uid);
  const fallbackComponent = node.fallback ? components.find((c) => c.name === node.fallback!.componentName) : undefined;
  const base = `p-${node.uid}`;
  // A refusal about a field without a place of its own goes at the top, not nowhere.
  const placed = new Set([
    'stepId',
    'parameters',
    'dependencies',
    'retryPolicy.maxRetries',
    'timeoutSeconds',
    'fallback',
    ...(node.retry ? ['retryPolicy.backoffFactor'] : []),
    ...(component?.parameters.map((p) => `parameters.${p.name}`) ?? []),
    ...(fallbackComponent?.parameters.map((p) => `fallback.parameters.${p.name}`) ?? []),
  ]);
  const unplaced = Object.entries(serverErrors)
    .filter(([field]) => !placed.has(field))
    .map(([, message]) => message);
  return (
    <section class="inspector" aria-labelledby="inspector-title" data-inspector={node.stepId}>
      <h2 id="inspector-title">
        Step <code>{node.stepId}</code>
      </h2>
      <p class="muted">
        {component ? component.description : `unknown component ${node.component}`}
        {component && (
          <>
            {' '}
            · <code>{component.grpc_method}</code>
          </>
        )}
      </p>
      {unplaced.map((message) => (
        <p key={message} class="field-error" role="alert" data-server-error="step">
          {message}
        </p>
      ))}
      <div class="field">
        <label for={`${base}-id`}>Step id</label>
        <input
          id={`${base}-id`}
          value={node.stepId}
          aria-invalid={errors.stepId ? 'true' : undefined}
          aria-describedby={errors.stepId ? `${base}-id-err` : undefined}
          onInput={(e) => onChange({ stepId: (e.target as HTMLInputElement).value })}
        />
        <FieldError id={`${base}-id-err`} error={errors.stepId} />
      </div>
      <fieldset>
        <legend>Parameters</legend>
        {component && (
          <ParamForm
            component={component}
            params={node.params}
            errors={errors}
            base={base}
            prefix=""
            onChange={(params) => onChange({ params })}
          />
        )}
        <FieldError id={`${base}-params-err`} error={errors.parameters} />
        <button type="button" class="link" onClick={() => onChange({ params: {} })}>
          Reset to defaults
        </button>
      </fieldset>
      <fieldset>
        <legend>Depends on</legend>
        {node.deps.length === 0 ? (
          <p class="muted">Nothing: this step works on the execution's input image.</p>
        ) : (
          <ol class="deps">
            {node.deps.map((d, i) => (
              <li key={d}>
                <code>{byUid.get(d)?.stepId ?? d}</code>
                {i === 0 && <span class="muted"> (image source)</span>}
                {i > 0 && (
                  <button
                    type="button"
                    class="link"
                    aria-label={`make ${byUid.get(d)?.stepId} the image source`}
                    onClick={() => onChange({ deps: [d, ...node.deps.filter((x) => x !== d)] })}
                  >
                    use its image
                  </button>
                )}
                <button
                  type="button"
                  class="link danger"
                  aria-label={`remove dependency on ${byUid.get(d)?.stepId}`}
                  onClick={() => onChange({ deps: node.deps.filter((x) => x !== d) })}
                >
                  remove
                </button>
              </li>
            ))}
          </ol>
        )}
        {candidates.length > 0 && (
          <div class="field">
            <label for={`${base}-adddep`}>Add a dependency</label>
            <select
              id={`${base}-adddep`}
              value=""
              onChange={(e) => {
                const v = (e.target as HTMLSelectElement).value;
                if (v) onChange({ deps: [...node.deps, v] });
              }}
            >
              <option value="">choose a step…</option>
              {candidates.map((c) => (
                <option key={c.uid} value={c.uid}>
                  {c.stepId}
                </option>
              ))}
            </select>
          </div>
        )}
        <FieldError id={`${base}-deps-err`} error={errors.dependencies} />
      </fieldset>
      <fieldset>
        <legend>On failure</legend>
        <div class="field" data-field="retryPolicy.maxRetries">
          <label for={`${base}-retries`}>Retries (0–10, for unavailable/overloaded/timeouts)</label>
          <input
            id={`${base}-retries`}
            type="number"
            min={0}
            max={10}
            step={1}
            value={node.retry?.maxRetries ?? 0}
            aria-invalid={errors['retryPolicy.maxRetries'] ? 'true' : undefined}
            onInput={(e) => onChange({ retry: withRetry(node.retry, 'maxRetries', (e.target as HTMLInputElement).value) })}
          />
          <FieldError id={`${base}-retries-err`} error={errors['retryPolicy.maxRetries']} />
        </div>
        {node.retry && (
          <div class="field" data-field="retryPolicy.backoffFactor">
            <label for={`${base}-backoff`}>Backoff factor (1–10: waits 200 ms × factor^(attempt−1))</label>
            <input
              id={`${base}-backoff`}
              type="number"
              min={1}
              max={10}
              step={0.5}
              value={node.retry.backoffFactor}
              aria-invalid={errors['retryPolicy.backoffFactor'] ? 'true' : undefined}
              onInput={(e) =>
                onChange({ retry: withRetry(node.retry, 'backoffFactor', (e.target as HTMLInputElement).value) })
              }
            />
            <FieldError id={`${base}-backoff-err`} error={errors['retryPolicy.backoffFactor']} />
          </div>
        )}
        <div class="field" data-field="timeoutSeconds">
          <label for={`${base}-timeout`}>Attempt timeout in seconds (up to {MAX_STEP_TIMEOUT_SECONDS}; empty: server default)</label>
          <input
            id={`${base}-timeout`}
            type="number"
            min={0.1}
            max={MAX_STEP_TIMEOUT_SECONDS}
            step={0.5}
            value={node.timeoutSeconds ?? ''}
            aria-invalid={errors.timeoutSeconds ? 'true' : undefined}
            onInput={(e) => {
              const v = parseNumber((e.target as HTMLInputElement).value);
              onChange({ timeoutSeconds: (v ?? null) as number | null });
            }}
          />
          <FieldError id={`${base}-timeout-err`} error={errors.timeoutSeconds} />
        </div>
        <div class="field" data-field="fallback">
          <label for={`${base}-fallback`}>Fallback: run instead when it still fails</label>
          <select
            id={`${base}-fallback`}
            value={node.fallback?.componentName ?? ''}
            aria-invalid={errors.fallback ? 'true' : undefined}
            onChange={(e) => {
              const name = (e.target as HTMLSelectElement).value;
              onChange({ fallback: fallbackOf(components.find((c) => c.name === name), name) });
            }}
          >
            <option value="">no fallback</option>
            {components.map((c) => (
              <option key={c.name} value={c.name}>
                {c.name}
              </option>
            ))}
            {node.fallback && !fallbackComponent && (
              <option value={node.fallback.componentName}>{node.fallback.componentName} (unknown)</option>
            )}
          </select>
          <FieldError id={`${base}-fallback-err`} error={errors.fallback} />
        </div>
        {others.length > 0 && (
          <div class="field">
            <label for={`${base}-fallback-like`}>… or fall back to what another step does</label>
            <select
              id={`${base}-fallback-like`}
              value=""
              onChange={(e) => {
                const other = byUid.get((e.target as HTMLSelectElement).value);
                if (other) onChange({ fallback: fallbackLike(other) });
              }}
            >
              <option value="">choose a step…</option>
              {others.map((o) => (
                <option key={o.uid} value={o.uid}>
                  {o.stepId} ({o.component})
                </option>
              ))}
            </select>
          </div>
        )}
        {node.fallback && fallbackComponent && (
          <fieldset class="nested" data-fallback={node.fallback.componentName}>
            <legend>Fallback {node.fallback.componentName} parameters</legend>
            <ParamForm
              component={fallbackComponent}
              params={node.fallback.parameters}
              errors={errors}
              base={base}
              prefix="fallback"
              onChange={(parameters) => onChange({ fallback: { ...node.fallback!, parameters } })}
            />
          </fieldset>
        )}
        <div class="field field-check">
          <label for={`${base}-continue`}>Skip it and go on when it fails (after retries and fallback)</label>
          <input
            id={`${base}-continue`}
            type="checkbox"
            checked={node.continueOnFailure}
            onChange={(e) => onChange({ continueOnFailure: (e.target as HTMLInputElement).checked })}
          />
        </div>
      </fieldset>
      <JsonEditor
        id={`${base}-extra`}
        label="Other fields"
        json={stepExtraJson(node)}
        hint="Kept as they are (componentVersion, resources, ...); nothing above edits them."
        parse={parseStepExtra}
        onApply={(extra) => onChange({ extra })}
      />
      <button type="button" class="danger" onClick={onRemove}>
        Delete step
      </button>
    </section>
  );
}
