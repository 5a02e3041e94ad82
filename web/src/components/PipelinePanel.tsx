import type { Graph, PipelineMeta } from '../graph';
import {
  GLOBAL_STRING_KEYS,
  globalText,
  otherGlobals,
  parseNumber,
  parsePipelineExtra,
  pipelineExtraJson,
  pipelineTimeoutError,
  withGlobalText,
  withOtherGlobals,
} from '../editors';
import { JsonEditor } from './JsonEditor';

interface Props {
  graph: Graph;
  meta: PipelineMeta;
  /** The API's refusal of the pipeline as a whole, by field ('' when it names none). */
  serverErrors: Record<string, string>;
  onChange: (change: Partial<PipelineMeta>) => void;
}

const GLOBAL_HINTS: Record<string, string> = {
  inputPath: 'where the pipeline reads its image',
  outputPath: 'where it writes its results',
  executionId: 'the original system’s execution id',
};

/** The pipeline as a whole (nothing selected): description, deadline, global parameters, kept fields. */
export function PipelinePanel({ graph, meta, serverErrors, onChange }: Props) {
  const timeoutError = serverErrors.timeoutSeconds ?? pipelineTimeoutError(meta.timeoutSeconds);
  const others = otherGlobals(meta.globalParameters);
  const isGlobal = (k: string) => k.startsWith('globalParameters.');
  const hasField = (k: string) => (GLOBAL_STRING_KEYS as readonly string[]).includes(k.slice('globalParameters.'.length));
  const otherError = Object.entries(serverErrors).find(([k]) => isGlobal(k) && !hasField(k))?.[1];
  // A refusal about a field this panel does not show (the name, metadata, ...) goes at the top.
  const unplaced = Object.entries(serverErrors)
    .filter(([k]) => k !== 'timeoutSeconds' && !isGlobal(k))
    .map(([, message]) => message);
  return (
    <section class="inspector" aria-labelledby="pipeline-panel-title" data-inspector="pipeline">
      <h2 id="pipeline-panel-title">Pipeline</h2>
      <p class="muted">Select a step to edit its parameters.</p>
      {unplaced.map((message) => (
        <p key={message} class="field-error" role="alert" data-server-error="pipeline">
          {message}
        </p>
      ))}
      <div class="field">
        <label for="pipeline-description">Description</label>
        <textarea
          id="pipeline-description"
          rows={3}
          value={meta.description ?? ''}
          onInput={(e) => {
            const v = (e.target as HTMLTextAreaElement).value;
            onChange({ description: v === '' ? undefined : v });
          }}
        />
      </div>
      <div class="field" data-field="timeoutSeconds">
        <label for="pipeline-timeout">Execution timeout in seconds (empty: server default)</label>
        <input
          id="pipeline-timeout"
          type="number"
          min={1}
          step={1}
          value={meta.timeoutSeconds ?? ''}
          aria-invalid={timeoutError ? 'true' : undefined}
          onInput={(e) => {
            const v = parseNumber((e.target as HTMLInputElement).value);
            onChange({ timeoutSeconds: v as number | undefined });
          }}
        />
        {timeoutError && (
          <small class="field-error" role="alert">
            {timeoutError}
          </small>
        )}
      </div>
      <fieldset>
        <legend>Global parameters</legend>
        {GLOBAL_STRING_KEYS.map((key) => (
          <div class="field" key={key} data-field={`globalParameters.${key}`}>
            <label for={`global-${key}`}>{key}</label>
            <input
              id={`global-${key}`}
              value={globalText(meta.globalParameters, key)}
              aria-describedby={`global-${key}-help`}
              onInput={(e) =>
                onChange({ globalParameters: withGlobalText(meta.globalParameters, key, (e.target as HTMLInputElement).value) })
              }
            />
            <small id={`global-${key}-help`} class="muted">
              {GLOBAL_HINTS[key]}
            </small>
            {serverErrors[`globalParameters.${key}`] && (
              <small class="field-error" role="alert">
                {serverErrors[`globalParameters.${key}`]}
              </small>
            )}
          </div>
        ))}
        <JsonEditor
          id="global-other"
          label="Other global parameters"
          json={JSON.stringify(others, null, 2)}
          hint="Any other keys, kept with the pipeline."
          parse={(text) => withOtherGlobals(meta.globalParameters, text)}
          onApply={(globalParameters) => onChange({ globalParameters })}
          error={otherError}
        />
      </fieldset>
      <JsonEditor
        id="pipeline-extra"
        label="Other fields"
        json={pipelineExtraJson(meta)}
        hint="Kept as they are (metadata such as createdBy and createdAt, ...); nothing above edits them."
        parse={parsePipelineExtra}
        onApply={(v) => onChange(v)}
      />
      <p class="muted">
        {graph.nodes.length} step{graph.nodes.length === 1 ? '' : 's'}
      </p>
    </section>
  );
}
