import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api';
import { StatusBadge } from '../components/StatusBadge';
import { fmtMs, fmtTime, shortId } from '../format';
import { usePolling } from '../hooks';
import { href, replaceQuery, type Route } from '../router';
import type { ExecutionRecord, StoredPipeline } from '../types';

const STATUSES = ['pending', 'running', 'completed', 'partially_failed', 'failed', 'cancelled'];

/** Executions, newest first, filtered by status and pipeline, paged. */
export function ExecutionsPage({ route }: { route: Route }) {
  const status = route.query.get('status') ?? '';
  const pipelineId = route.query.get('pipeline') ?? '';
  const limit = Number(route.query.get('limit') ?? '20');
  // Rows belong to the filter they were fetched for: a response to an older filter (still in
  // flight when the user changed it) is dropped, and rows of the old filter are never shown
  // under the new one.
  const query = `${status}|${pipelineId}|${limit}`;
  const current = useRef(query);
  current.current = query;
  const [page, setPage] = useState<{ query: string; rows: ExecutionRecord[]; next?: string } | null>(null);
  const rows = page?.query === query ? page.rows : null;
  const next = page?.query === query ? page.next : undefined;
  const [error, setError] = useState<string | null>(null);
  const [pipelines, setPipelines] = useState<StoredPipeline[]>([]);
  const [auto, setAuto] = useState(true);

  useEffect(() => {
    api.listPipelines().then(setPipelines, () => setPipelines([]));
  }, []);

  const fetchFirst = () => {
    const asked = query;
    return api.listExecutions({ limit, status, pipelineId }).then(
      (r) => {
        if (current.current !== asked) return;
        setPage({ query: asked, rows: r.executions, next: r.next_cursor });
        setError(null);
      },
      (e: Error) => {
        if (current.current === asked) setError(e.message);
      },
    );
  };
  const anyLive = (rows ?? []).some((r) => r.status === 'pending' || r.status === 'running');
  usePolling(fetchFirst, 3000, auto && (anyLive || rows === null), [status, pipelineId, limit]);

  const more = async () => {
    if (!next || !rows) return;
    const asked = query;
    try {
      const r = await api.listExecutions({ limit, status, pipelineId, cursor: next });
      if (current.current !== asked) return;
      setPage({ query: asked, rows: [...rows, ...r.executions], next: r.next_cursor });
    } catch (e) {
      if (current.current === asked) setError((e as Error).message);
    }
  };

  const set = (k: string, v: string) =>
    replaceQuery('/executions', { status, pipeline: pipelineId, limit: String(limit), [k]: v });
  const names = new Map(pipelines.map((p) => [p.pipelineId, p.pipelineName]));
  const filtered = Boolean(status || pipelineId);

  return (
    <div class="page">
      <h1>Executions</h1>
      <form class="filters row wrap" aria-label="Filters" onSubmit={(e) => e.preventDefault()}>
        <div class="field compact">
          <label for="f-status">Status</label>
          <select id="f-status" value={status} onChange={(e) => set('status', (e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>
                {s.replace('_', ' ')}
              </option>
            ))}
          </select>
        </div>
        <div class="field compact">
          <label for="f-pipeline">Pipeline</label>
          <select id="f-pipeline" value={pipelineId} onChange={(e) => set('pipeline', (e.target as HTMLSelectElement).value)}>
            <option value="">any</option>
            {pipelines.map((p) => (
              <option key={p.pipelineId} value={p.pipelineId}>
                {p.pipelineName}
              </option>
            ))}
          </select>
        </div>
        <div class="field compact narrow">
          <label for="f-limit">Per page</label>
          <select id="f-limit" value={String(limit)} onChange={(e) => set('limit', (e.target as HTMLSelectElement).value)}>
            {[20, 50, 100, 200].map((n) => (
              <option key={n} value={n}>
                {n}
              </option>
            ))}
          </select>
        </div>
        <button type="button" class="secondary" onClick={fetchFirst}>
          Refresh
        </button>
        <label class="inline">
          <input type="checkbox" checked={auto} onChange={(e) => setAuto((e.target as HTMLInputElement).checked)} /> Follow running
        </label>
      </form>
      {error && (
        <p class="banner error" role="alert">
          Cannot list executions: {error}{' '}
          <button type="button" class="link" onClick={fetchFirst}>
            Retry
          </button>
        </p>
      )}
      {rows === null && !error && <p class="muted">Loading…</p>}
      {rows?.length === 0 && (
        <div class="empty" data-empty="executions" data-loaded-status={status} data-loaded-pipeline={pipelineId}>
          {filtered ? (
            <p>No executions match these filters.</p>
          ) : (
            <p>
              No executions yet. <a href="#/">Build a pipeline on the canvas</a> and run it.
            </p>
          )}
        </div>
      )}
      {rows && rows.length > 0 && (
        <div class="table-wrap" data-loaded-status={status} data-loaded-pipeline={pipelineId}>
          <table class="executions">
            <caption class="sr-only">Executions, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Execution</th>
                <th scope="col">Pipeline</th>
                <th scope="col">Status</th>
                <th scope="col">Created</th>
                <th scope="col">Duration</th>
                <th scope="col">Steps</th>
                <th scope="col">Error</th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => {
                const done = r.steps.filter((s) => s.status === 'completed').length;
                return (
                  <tr key={r.execution_id} data-execution={r.execution_id} data-status={r.status}>
                    <td>
                      <a href={href(`/executions/${r.execution_id}`)}>
                        <code>{shortId(r.execution_id)}</code>
                      </a>
                    </td>
                    <td>
                      {r.pipelineId ? (
                        <>
                          {names.get(r.pipelineId) ?? shortId(r.pipelineId)}
                          {r.pipeline_revision ? <span class="muted"> r{r.pipeline_revision}</span> : null}
                        </>
                      ) : (
                        <span class="muted">inline</span>
                      )}
                    </td>
                    <td>
                      <StatusBadge status={r.status} />
                    </td>
                    <td>{fmtTime(r.created_at)}</td>
                    <td>{fmtMs(r.execution_time_ms)}</td>
                    <td>
                      {done}/{r.steps.length}
                      {r.input_results.length > 1 && <span class="muted"> over {r.input_results.length} inputs</span>}
                    </td>
                    <td class="error-cell" title={r.error ?? ''}>
                      {r.error ?? ''}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {next && (
        <button type="button" class="secondary" onClick={more}>
          Load more
        </button>
      )}
    </div>
  );
}
