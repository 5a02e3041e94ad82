import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { Gantt } from '../components/Gantt';
import { InputGrid } from '../components/InputGrid';
import { Results } from '../components/Results';
import { StatusBadge } from '../components/StatusBadge';
import { fmtMs, fmtTime } from '../format';
import { useExecution } from '../hooks';
import { forInput, hasSeveralInputs } from '../progress';
import { href } from '../router';
import type { FileRecord, PipelineDefinition, UiConfig } from '../types';
import { TERMINAL } from '../types';

/**
 * One execution: status, per-step timings as a Gantt, errors, trace, outputs;
 * with several inputs, a tile per input and the details of the one picked.
 */
export function ExecutionPage({ id, config }: { id: string; config: UiConfig | null }) {
  const { record, error, live } = useExecution(id);
  const [shown, setShown] = useState(0);
  const [definition, setDefinition] = useState<PipelineDefinition | null>(null);
  const [input, setInput] = useState<FileRecord | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);

  useEffect(() => {
    if (!record?.pipelineId) return;
    api
      .getPipeline(record.pipelineId, record.pipeline_revision ?? undefined)
      .then(setDefinition, () => setDefinition(null));
  }, [record?.pipelineId, record?.pipeline_revision]);
  const source = record?.input_results[shown]?.input ?? record?.inputs[0];
  useEffect(() => {
    setInput(null);
    // An object reference is no uploaded file: there is no file record to show.
    if (!source || source.startsWith('s3://')) return;
    api.file(source).then(setInput, () => setInput(null));
  }, [source]);

  if (!record) {
    return (
      <div class="page">
        <h1>Execution</h1>
        {error ? (
          <p class="banner error" role="alert">
            {error}
          </p>
        ) : (
          <p class="muted">Loading…</p>
        )}
        <p>
          <a href="#/executions">All executions</a>
        </p>
      </div>
    );
  }
  const jaeger = config?.jaegerUiUrl;
  const several = hasSeveralInputs(record);
  const view = forInput(record, shown);
  const ofInput = several ? ` of input ${shown}` : '';
  return (
    <div class="page" data-execution={record.execution_id} data-execution-status={record.status}>
      <p>
        <a href="#/executions">← All executions</a>
      </p>
      <h1>
        Execution <code class="break">{record.execution_id}</code> <StatusBadge status={record.status} />
        {live && !TERMINAL.has(record.status) && <span class="muted"> live</span>}
      </h1>
      <dl class="facts">
        <div>
          <dt>Pipeline</dt>
          <dd>
            {record.pipelineId ? (
              <a href={href('/', { pipeline: record.pipelineId, revision: String(record.pipeline_revision ?? '') })}>
                {definition?.pipelineName ?? record.pipelineId}
                {record.pipeline_revision ? `, revision ${record.pipeline_revision}` : ''}
              </a>
            ) : (
              'inline definition'
            )}
          </dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>{fmtTime(record.created_at)}</dd>
        </div>
        <div>
          <dt>Started</dt>
          <dd>{fmtTime(record.started_at)}</dd>
        </div>
        <div>
          <dt>Finished</dt>
          <dd>{fmtTime(record.finished_at)}</dd>
        </div>
        <div>
          <dt>Execution time</dt>
          <dd>{fmtMs(record.execution_time_ms)}</dd>
        </div>
        <div>
          <dt>Trace</dt>
          <dd data-trace>
            {record.trace_id ? (
              jaeger ? (
                <a href={`${jaeger}/trace/${record.trace_id}`} target="_blank" rel="noopener noreferrer">
                  <code>{record.trace_id}</code> in Jaeger
                </a>
              ) : (
                <>
                  <code>{record.trace_id}</code>{' '}
                  <span class="muted">(set JAEGER_UI_URL on the backend to link it)</span>
                </>
              )
            ) : (
              <span class="muted">no trace id recorded (tracing off, or not sampled)</span>
            )}
          </dd>
        </div>
      </dl>
      {!TERMINAL.has(record.status) && (
        <button
          type="button"
          class="secondary"
          onClick={() => api.cancelExecution(record.execution_id).catch((e: Error) => setActionError(e.message))}
        >
          Cancel execution
        </button>
      )}
      {actionError && (
        <p class="banner error" role="alert">
          {actionError}
        </p>
      )}
      {record.error && (
        <p class="banner error" role="alert" data-execution-error>
          {record.error}
        </p>
      )}
      {error && <p class="banner error">{error}</p>}

      {several && (
        <>
          <h2>Inputs</h2>
          <InputGrid record={record} selected={shown} onSelect={setShown} />
        </>
      )}
      <h2>Timeline{ofInput}</h2>
      <Gantt record={view} />
      <div class="table-wrap">
        <table class="steps">
          <caption class="sr-only">Steps</caption>
          <thead>
            <tr>
              <th scope="col">Step</th>
              <th scope="col">Component</th>
              <th scope="col">Level</th>
              <th scope="col">Status</th>
              <th scope="col">Attempts</th>
              <th scope="col">Time</th>
              <th scope="col">Service time</th>
              <th scope="col">Error</th>
            </tr>
          </thead>
          <tbody>
            {view.steps.map((s) => (
              <tr key={s.stepId} data-step-id={s.stepId} data-status={s.status}>
                <th scope="row">
                  <code>{s.stepId}</code>
                </th>
                <td>
                  {s.componentName}
                  {s.used_fallback ? ' (fallback)' : ''}
                </td>
                <td>{s.level}</td>
                <td>
                  <StatusBadge status={s.status} attempts={s.attempts} />
                </td>
                <td>{s.attempts}</td>
                <td>{fmtMs(s.processing_time_ms)}</td>
                <td>{fmtMs(s.service_time_ms)}</td>
                <td class="error-cell">{s.error ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h2>Outputs{ofInput}</h2>
      <Results record={view} definition={definition} input={input} />
    </div>
  );
}
