import type { Graph, GraphNode } from '../graph';
import { stepIdError } from '../graph';
import { inputStep, paramErrors, parseInput } from '../params';
import type { Component, ParamSpec } from '../types';

interface Props {
  graph: Graph;
  node: GraphNode;
  component: Component | undefined;
  onChange: (change: Partial<GraphNode>) => void;
  onRemove: () => void;
}

function ParamField({
  spec,
  value,
  error,
  id,
  onChange,
}: {
  spec: ParamSpec;
  value: unknown;
  error?: string;
  id: string;
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
        value={String(value)}
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
    <div class={`field${spec.type === 'boolean' ? ' field-check' : ''}`} data-param={spec.name}>
      <label for={id}>{spec.name}</label>
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

/** The selected step: its id, generated parameter form, dependencies, retries. */
export function Inspector({ graph, node, component, onChange, onRemove }: Props) {
  const errors = paramErrors(component, node.params);
  const idError = stepIdError(graph, node.uid, node.stepId);
  const byUid = new Map(graph.nodes.map((n) => [n.uid, n]));
  const candidates = graph.nodes.filter((n) => n.uid !== node.uid && !node.deps.includes(n.uid));
  const base = `p-${node.uid}`;
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
      <div class="field">
        <label for={`${base}-id`}>Step id</label>
        <input
          id={`${base}-id`}
          value={node.stepId}
          aria-invalid={idError ? 'true' : undefined}
          aria-describedby={idError ? `${base}-id-err` : undefined}
          onInput={(e) => onChange({ stepId: (e.target as HTMLInputElement).value })}
        />
        {idError && (
          <small id={`${base}-id-err`} class="field-error" role="alert">
            {idError}
          </small>
        )}
      </div>
      <fieldset>
        <legend>Parameters</legend>
        {component?.parameters.map((spec) => (
          <ParamField
            key={spec.name}
            spec={spec}
            id={`${base}-${spec.name}`}
            value={node.params[spec.name]}
            error={errors[spec.name]}
            onChange={(v) => onChange({ params: { ...node.params, [spec.name]: v } })}
          />
        ))}
        <button
          type="button"
          class="link"
          onClick={() =>
            component &&
            onChange({ params: Object.fromEntries(component.parameters.map((p) => [p.name, p.default])) })
          }
        >
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
      </fieldset>
      <fieldset>
        <legend>On failure</legend>
        <div class="field">
          <label for={`${base}-retries`}>Retries (0–10, for unavailable/overloaded/timeouts)</label>
          <input
            id={`${base}-retries`}
            type="number"
            min={0}
            max={10}
            step={1}
            value={node.retry?.maxRetries ?? 0}
            onInput={(e) => {
              const n = Number((e.target as HTMLInputElement).value);
              onChange({
                retry: n > 0 ? { maxRetries: n, backoffFactor: node.retry?.backoffFactor ?? 2 } : null,
              });
            }}
          />
        </div>
        {node.retry && (
          <div class="field">
            <label for={`${base}-backoff`}>Backoff factor (1–10)</label>
            <input
              id={`${base}-backoff`}
              type="number"
              min={1}
              max={10}
              step={0.5}
              value={node.retry.backoffFactor}
              onInput={(e) =>
                onChange({
                  retry: { maxRetries: node.retry!.maxRetries, backoffFactor: Number((e.target as HTMLInputElement).value) },
                })
              }
            />
          </div>
        )}
        <div class="field">
          <label for={`${base}-timeout`}>Attempt timeout in seconds (empty: server default)</label>
          <input
            id={`${base}-timeout`}
            type="number"
            min={0.1}
            step={0.5}
            value={node.timeoutSeconds ?? ''}
            onInput={(e) => {
              const v = (e.target as HTMLInputElement).value;
              onChange({ timeoutSeconds: v === '' ? null : Number(v) });
            }}
          />
        </div>
        <div class="field field-check">
          <label for={`${base}-continue`}>Skip it and go on when it fails</label>
          <input
            id={`${base}-continue`}
            type="checkbox"
            checked={node.continueOnFailure}
            onChange={(e) => onChange({ continueOnFailure: (e.target as HTMLInputElement).checked })}
          />
        </div>
      </fieldset>
      <button type="button" class="danger" onClick={onRemove}>
        Delete step
      </button>
    </section>
  );
}
