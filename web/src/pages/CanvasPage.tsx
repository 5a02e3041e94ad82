import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { api, ApiError } from '../api';
import { announce } from '../announce';
import { Board, type Selection } from '../components/Board';
import { InputGrid } from '../components/InputGrid';
import { Inspector } from '../components/Inspector';
import { PipelinePanel } from '../components/PipelinePanel';
import { Results } from '../components/Results';
import { StatusBadge } from '../components/StatusBadge';
import { fmtMs, shortId } from '../format';
import type { GraphNode } from '../graph';
import {
  addNode,
  connect,
  disconnect,
  fromDefinition,
  layout,
  metaFromDefinition,
  positionsOf,
  removeNode,
  toDefinition,
  updateNode,
} from '../graph';
import { nodeProblems, pipelineTimeoutError, placeApiError } from '../editors';
import { useExecution, useFileUrl } from '../hooks';
import { forInput, hasSeveralInputs, nodeRuns } from '../progress';
import { href, type Route } from '../router';
import type { Component, FileRecord, PipelineDefinition, StoredPipeline } from '../types';
import { TERMINAL } from '../types';
import { type CanvasDraft, loadDraft, loadPositions, saveDraft, savePositions } from './canvasStore';

interface Props {
  components: Component[];
  route: Route;
}

function Thumb({ file }: { file: FileRecord }) {
  const { url } = useFileUrl(file.file_id);
  return url ? <img src={url} alt="" class="thumb" /> : <span class="thumb" aria-hidden="true" />;
}

const PIPELINE = ' pipeline';

export function CanvasPage({ components, route }: Props) {
  const [draft, setDraftState] = useState<CanvasDraft>(loadDraft);
  const draftRef = useRef(draft);
  const setDraft = (change: (d: CanvasDraft) => CanvasDraft) => {
    const next = change(draftRef.current);
    draftRef.current = next;
    saveDraft(next);
    setDraftState(next);
  };
  const { graph, meta, dirty } = draft;
  const [selection, setSelection] = useState<Selection>(null);
  const [nodeErrors, setNodeErrors] = useState<Record<string, string>>({});
  // The API's refusal placed on a field: by node uid, or PIPELINE for the pipeline panel.
  const [fieldErrors, setFieldErrors] = useState<Record<string, Record<string, string>>>({});
  const [banner, setBanner] = useState<{ kind: 'error' | 'info'; text: string } | null>(null);
  const [pipelines, setPipelines] = useState<StoredPipeline[] | null>(null);
  const [files, setFiles] = useState<FileRecord[] | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [uploading, setUploading] = useState(0);
  const [dragOver, setDragOver] = useState(false);
  const [ghost, setGhost] = useState<{ component: string; x: number; y: number } | null>(null);
  const boardRef = useRef<HTMLDivElement | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);

  const componentOf = (name: string) => components.find((c) => c.name === name);
  const problems = useMemo(
    () => new Map(graph.nodes.map((n) => [n.uid, nodeProblems(graph, n, components)])),
    [graph, components],
  );
  const invalid = useMemo(
    () => new Set([...problems].filter(([, p]) => Object.keys(p).length > 0).map(([uid]) => uid)),
    [problems],
  );

  const refreshPipelines = () =>
    api.listPipelines().then(setPipelines, (e: Error) => {
      setPipelines([]);
      setBanner({ kind: 'error', text: `Cannot list pipelines: ${e.message}` });
    });
  const refreshFiles = () =>
    api.listFiles(60).then(
      (all) => setFiles(all.filter((f) => !f.execution_id)),
      (e: Error) => {
        setFiles([]);
        setBanner({ kind: 'error', text: `Cannot list images: ${e.message}` });
      },
    );
  useEffect(() => {
    refreshPipelines();
    refreshFiles();
  }, []);

  // #/?pipeline=ID&revision=N opens a stored pipeline.
  useEffect(() => {
    const id = route.query.get('pipeline');
    if (!id) return;
    const revision = route.query.get('revision');
    load(id, revision ? Number(revision) : undefined);
    history.replaceState(null, '', '#/');
  }, [route.query.get('pipeline'), route.query.get('revision')]);

  /** Structural edits: the stored pipeline is now out of date, old errors go. */
  const edit = (change: (d: CanvasDraft) => CanvasDraft) => {
    setNodeErrors({});
    setFieldErrors({});
    setDraft((d) => ({ ...change(d), dirty: true }));
  };

  const add = (name: string, position?: { x: number; y: number }) => {
    const component = componentOf(name);
    if (!component) return;
    let added: GraphNode | undefined;
    edit((d) => {
      const r = addNode(d.graph, component, position);
      added = r.node;
      return { ...d, graph: r.graph };
    });
    if (added) {
      setSelection({ type: 'node', uid: added.uid });
      announce(`Added step ${added.stepId}`);
    }
  };

  /** `sent`: the definition the API refused, to place an error that names a JSON path. */
  const showError = (e: unknown, what: string, sent: PipelineDefinition | null = null) => {
    if (e instanceof ApiError && e.status === 400) {
      const place = placeApiError(e.message, e.stepId, sent);
      const node = place.stepId ? draftRef.current.graph.nodes.find((n) => n.stepId === place.stepId) : undefined;
      if (node) {
        setNodeErrors({ [node.uid]: e.message });
        setFieldErrors({ [node.uid]: { [place.field]: e.message } });
        setSelection({ type: 'node', uid: node.uid });
        setBanner({ kind: 'error', text: `${what}: the server refused step ${place.stepId} (see the step).` });
        announce(`${what} refused: ${e.message}`);
        return;
      }
      if (!place.stepId && place.field && place.field !== 'steps') {
        setFieldErrors({ [PIPELINE]: { [place.field]: e.message } });
        setSelection(null);
        const text = `${what}: ${e.message} (see the pipeline panel)`;
        setBanner({ kind: 'error', text });
        announce(text);
        return;
      }
    }
    const text = `${what}: ${(e as Error).message}`;
    setBanner({ kind: 'error', text });
    announce(text);
  };

  const checkLocal = (): boolean => {
    if (graph.nodes.length === 0) {
      setBanner({ kind: 'error', text: 'Add at least one step to the canvas first.' });
      return false;
    }
    if (invalid.size > 0) {
      const errors: Record<string, string> = {};
      for (const uid of invalid) errors[uid] = Object.values(problems.get(uid) ?? {})[0];
      setNodeErrors(errors);
      setBanner({ kind: 'error', text: 'Some steps have invalid settings: fix them first (marked on the canvas).' });
      return false;
    }
    const timeout = pipelineTimeoutError(meta.timeoutSeconds);
    if (timeout) {
      setSelection(null);
      setBanner({ kind: 'error', text: `The pipeline's ${timeout}.` });
      return false;
    }
    if (!meta.pipelineName.trim()) {
      setBanner({ kind: 'error', text: 'Give the pipeline a name.' });
      return false;
    }
    return true;
  };

  const save = async (asNew: boolean) => {
    setBanner(null);
    setNodeErrors({});
    setFieldErrors({});
    if (!checkLocal()) return;
    setBusy('save');
    const id = asNew ? undefined : meta.pipelineId;
    const definition = toDefinition(graph, { ...meta, pipelineId: id });
    try {
      const stored = id ? await api.updatePipeline(id, definition) : await api.createPipeline(definition);
      savePositions(stored.pipelineId, positionsOf(graph));
      setDraft((d) => ({
        ...d,
        dirty: false,
        meta: { ...d.meta, pipelineId: stored.pipelineId, revision: stored.revision, latestRevision: stored.revision },
      }));
      const text = `Saved ${stored.pipelineName} as revision ${stored.revision}.`;
      setBanner({ kind: 'info', text });
      announce(text);
      refreshPipelines();
    } catch (e) {
      showError(e, 'Save', definition);
    } finally {
      setBusy(null);
    }
  };

  async function load(id: string, revision?: number) {
    setBanner(null);
    setNodeErrors({});
    setFieldErrors({});
    try {
      const [stored, latest] = await Promise.all([
        api.getPipeline(id, revision),
        revision ? api.getPipeline(id) : Promise.resolve(null),
      ]);
      const g = fromDefinition(stored, loadPositions(id));
      setSelection(null);
      setDraft((d) => ({
        ...d,
        graph: g,
        dirty: false,
        meta: {
          ...metaFromDefinition(stored),
          revision: stored.revision,
          latestRevision: latest?.revision ?? stored.revision,
        },
      }));
      announce(`Loaded ${stored.pipelineName}, revision ${stored.revision}`);
    } catch (e) {
      showError(e, 'Load');
    }
  }

  const remove = async () => {
    if (!meta.pipelineId) return;
    if (!window.confirm(`Delete the pipeline "${meta.pipelineName}" and all its revisions? Past executions keep their copy.`)) return;
    try {
      await api.deletePipeline(meta.pipelineId);
      // The unsaved copy keeps every field, so saving it again loses nothing.
      setDraft((d) => {
        const { pipelineId: _id, revision: _r, latestRevision: _l, ...kept } = d.meta;
        return { ...d, dirty: true, meta: kept };
      });
      announce('Pipeline deleted; the canvas keeps an unsaved copy');
      refreshPipelines();
    } catch (e) {
      showError(e, 'Delete');
    }
  };

  const uploadFiles = async (list: FileList | File[]) => {
    const images = [...list];
    if (images.length === 0) return;
    setBanner(null);
    setUploading((n) => n + images.length);
    const uploaded: FileRecord[] = [];
    for (const f of images) {
      try {
        uploaded.push(await api.upload(f));
      } catch (e) {
        showError(e, `Upload of ${f.name}`);
      } finally {
        setUploading((n) => n - 1);
      }
    }
    if (uploaded.length) {
      setFiles((fs) => [...uploaded, ...(fs ?? []).filter((f) => !uploaded.some((u) => u.file_id === f.file_id))]);
      setDraft((d) => ({ ...d, selectedFiles: uploaded.map((u) => u.file_id) }));
      announce(`Uploaded ${uploaded.map((u) => u.filename ?? u.file_id).join(', ')}`);
    }
  };

  const run = async () => {
    setBanner(null);
    setNodeErrors({});
    setFieldErrors({});
    if (!checkLocal()) return;
    const chosen = (files ?? []).filter((f) => draft.selectedFiles.includes(f.file_id));
    if (chosen.length === 0) {
      setBanner({ kind: 'error', text: 'Choose or upload an image to run the pipeline on.' });
      return;
    }
    setBusy('run');
    try {
      // A saved, unchanged pipeline runs by id (its executions list under it).
      const body =
        meta.pipelineId && !dirty && meta.revision === meta.latestRevision
          ? { pipelineId: meta.pipelineId }
          : { pipeline: toDefinition(graph, { ...meta, pipelineId: undefined }) };
      // All the chosen images are one execution: the server runs them side by side.
      const fileIds = chosen.map((f) => f.file_id);
      const accepted = await api.startExecution({ ...body, inputs: fileIds });
      const label = chosen.length === 1 ? (chosen[0].filename ?? shortId(chosen[0].file_id)) : `${chosen.length} images`;
      const started = { executionId: accepted.execution_id, fileIds, label, definition: toDefinition(graph, meta) };
      setDraft((d) => ({ ...d, runs: [started, ...d.runs].slice(0, 20), watching: started.executionId }));
      announce(`Started an execution on ${label}`);
    } catch (e) {
      showError(e, 'Run');
    } finally {
      setBusy(null);
    }
  };

  const watch = useExecution(draft.watching, (r) => announce(`Execution ${shortId(r.execution_id)} ${r.status}`));
  // The input of a several-input execution whose steps the nodes show; null: a summary of all.
  const [followed, setFollowed] = useState<number | null>(null);
  useEffect(() => setFollowed(null), [draft.watching]);
  const steps = useMemo(() => nodeRuns(watch.record, followed), [watch.record, followed]);
  const several = watch.record ? hasSeveralInputs(watch.record) : false;
  const selectedNode = selection?.type === 'node' ? graph.nodes.find((n) => n.uid === selection.uid) : undefined;
  const watchedRun = draft.runs.find((r) => r.executionId === draft.watching);
  const watchedFileId = watch.record?.input_results[followed ?? 0]?.input ?? watchedRun?.fileIds[0];
  const watchedInput = files?.find((f) => f.file_id === watchedFileId) ?? null;

  // Drag a palette entry onto the canvas (pointer events, so touch works too).
  const paletteDown = (e: PointerEvent, name: string) => {
    if (e.button !== 0) return;
    const sx = e.clientX;
    const sy = e.clientY;
    let dragging = false;
    const move = (ev: PointerEvent) => {
      if (!dragging && Math.hypot(ev.clientX - sx, ev.clientY - sy) < 6) return;
      dragging = true;
      setGhost({ component: name, x: ev.clientX, y: ev.clientY });
    };
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      setGhost(null);
      if (!dragging) return;
      suppressClick.current = true;
      const inner = boardRef.current?.querySelector('.board-inner');
      const box = boardRef.current?.getBoundingClientRect();
      if (!inner || !box) return;
      if (ev.clientX < box.left || ev.clientX > box.right || ev.clientY < box.top || ev.clientY > box.bottom) return;
      const r = inner.getBoundingClientRect();
      add(name, { x: ev.clientX - r.left - 60, y: ev.clientY - r.top - 30 });
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  };
  const suppressClick = useRef(false);

  const revisions = meta.latestRevision ? Array.from({ length: meta.latestRevision }, (_, i) => meta.latestRevision! - i) : [];

  return (
    <div class="canvas-page">
      <section class="pipeline-bar" aria-label="Pipeline">
        <div class="field compact">
          <label for="pipeline-name">Pipeline name</label>
          <input
            id="pipeline-name"
            value={meta.pipelineName}
            onInput={(e) => {
              const v = (e.target as HTMLInputElement).value;
              setDraft((d) => ({ ...d, dirty: true, meta: { ...d.meta, pipelineName: v } }));
            }}
          />
        </div>
        <div class="field compact narrow">
          <label for="pipeline-version">Version label</label>
          <input
            id="pipeline-version"
            value={meta.version}
            onInput={(e) => {
              const v = (e.target as HTMLInputElement).value;
              setDraft((d) => ({ ...d, dirty: true, meta: { ...d.meta, version: v } }));
            }}
          />
        </div>
        <div class="row">
          <button type="button" onClick={() => save(false)} disabled={busy !== null}>
            {meta.pipelineId ? 'Save revision' : 'Save'}
          </button>
          {meta.pipelineId && (
            <button type="button" class="secondary" onClick={() => save(true)} disabled={busy !== null}>
              Save as new
            </button>
          )}
          <button
            type="button"
            class="secondary"
            onClick={() => {
              if (dirty && graph.nodes.length && !window.confirm('Discard the unsaved changes on the canvas?')) return;
              setSelection(null);
              setNodeErrors({});
              setDraft((d) => ({ ...d, graph: { nodes: [] }, dirty: false, meta: { pipelineName: 'untitled pipeline', version: '1.0.0' } }));
            }}
          >
            New
          </button>
          <button type="button" class="secondary" onClick={() => setDraft((d) => ({ ...d, graph: layout(d.graph) }))}>
            Tidy layout
          </button>
        </div>
        <div class="field compact">
          <label for="pipeline-load">Open a saved pipeline</label>
          <select
            id="pipeline-load"
            value={meta.pipelineId ?? ''}
            onChange={(e) => {
              const id = (e.target as HTMLSelectElement).value;
              if (!id) return;
              if (dirty && graph.nodes.length && !window.confirm('Discard the unsaved changes on the canvas?')) return;
              load(id);
            }}
          >
            <option value="">{pipelines === null ? 'loading…' : pipelines.length ? 'choose…' : 'none saved yet'}</option>
            {(pipelines ?? []).map((p) => (
              <option key={p.pipelineId} value={p.pipelineId}>
                {p.pipelineName} (rev {p.revision})
              </option>
            ))}
          </select>
        </div>
        {meta.pipelineId && revisions.length > 0 && (
          <div class="field compact narrow">
            <label for="pipeline-revision">Revision</label>
            <select
              id="pipeline-revision"
              value={String(meta.revision ?? '')}
              onChange={(e) => load(meta.pipelineId!, Number((e.target as HTMLSelectElement).value))}
            >
              {revisions.map((r) => (
                <option key={r} value={r}>
                  {r}
                  {r === meta.latestRevision ? ' (latest)' : ''}
                </option>
              ))}
            </select>
          </div>
        )}
        <p class="save-state" data-save-state={dirty ? 'dirty' : meta.pipelineId ? 'saved' : 'new'}>
          {meta.pipelineId
            ? `${dirty ? 'Unsaved changes · ' : ''}revision ${meta.revision}${
                meta.revision !== meta.latestRevision ? ` of ${meta.latestRevision} (saving makes it the latest)` : ''
              }`
            : 'Not saved yet'}
        </p>
        {meta.pipelineId && (
          <button type="button" class="link danger" onClick={remove}>
            Delete pipeline
          </button>
        )}
      </section>

      {banner && (
        <div class={`banner ${banner.kind}`} role={banner.kind === 'error' ? 'alert' : 'status'} data-banner={banner.kind}>
          {banner.text}
          <button type="button" class="link" aria-label="dismiss" onClick={() => setBanner(null)}>
            ×
          </button>
        </div>
      )}

      <div class="workbench">
        <nav class="palette" aria-label="Components">
          <h2>Components</h2>
          {components.length === 0 && <p class="empty">The registry is empty.</p>}
          <ul>
            {components.map((c) => (
              <li key={c.name}>
                <button
                  type="button"
                  class={`palette-item comp-${c.name}`}
                  data-component={c.name}
                  aria-label={`Add a ${c.name} step`}
                  onPointerDown={(e) => paletteDown(e, c.name)}
                  onClick={() => {
                    if (suppressClick.current) {
                      suppressClick.current = false;
                      return;
                    }
                    add(c.name);
                  }}
                >
                  <strong>{c.name}</strong>
                  <small>{c.description}</small>
                </button>
              </li>
            ))}
          </ul>
          <p class="muted hint">Click to add, or drag onto the canvas. Connect: drag from a step's right port onto another step. Keyboard: Tab to a step, arrows move it, Delete removes it; dependencies are in the step's panel.</p>
        </nav>

        <Board
          graph={graph}
          components={components}
          selection={selection}
          errors={nodeErrors}
          invalid={invalid}
          steps={steps}
          boardRef={boardRef}
          onSelect={setSelection}
          onMove={(uid, x, y) => setDraft((d) => ({ ...d, graph: updateNode(d.graph, uid, { x: Math.round(x), y: Math.round(y) }) }))}
          onConnect={(from, to) => {
            const r = connect(draftRef.current.graph, from, to);
            if (r.error) {
              setBanner({ kind: 'error', text: r.error });
              return;
            }
            edit((d) => ({ ...d, graph: r.graph }));
            const names = draftRef.current.graph.nodes;
            announce(`${names.find((n) => n.uid === to)?.stepId} now depends on ${names.find((n) => n.uid === from)?.stepId}`);
          }}
          onDisconnect={(from, to) => {
            edit((d) => ({ ...d, graph: disconnect(d.graph, from, to) }));
            setSelection(null);
            announce('Dependency removed');
          }}
          onRemove={(uid) => {
            edit((d) => ({ ...d, graph: removeNode(d.graph, uid) }));
            setSelection(null);
            announce('Step removed');
          }}
        />

        <aside class="side" aria-label="Selected item">
          {selectedNode ? (
            <Inspector
              graph={graph}
              node={selectedNode}
              components={components}
              serverErrors={fieldErrors[selectedNode.uid] ?? {}}
              onChange={(change) => edit((d) => ({ ...d, graph: updateNode(d.graph, selectedNode.uid, change) }))}
              onRemove={() => {
                edit((d) => ({ ...d, graph: removeNode(d.graph, selectedNode.uid) }));
                setSelection(null);
              }}
            />
          ) : selection?.type === 'edge' ? (
            <section class="inspector">
              <h2>Dependency</h2>
              <p>
                <code>{graph.nodes.find((n) => n.uid === selection.to)?.stepId}</code> depends on{' '}
                <code>{graph.nodes.find((n) => n.uid === selection.from)?.stepId}</code>.
              </p>
              <button
                type="button"
                class="danger"
                onClick={() => {
                  edit((d) => ({ ...d, graph: disconnect(d.graph, selection.from, selection.to) }));
                  setSelection(null);
                }}
              >
                Remove dependency
              </button>
            </section>
          ) : (
            <PipelinePanel
              graph={graph}
              meta={meta}
              serverErrors={fieldErrors[PIPELINE] ?? {}}
              onChange={(change) => {
                setFieldErrors((f) => ({ ...f, [PIPELINE]: {} }));
                setDraft((d) => ({ ...d, dirty: true, meta: { ...d.meta, ...change } }));
              }}
            />
          )}
        </aside>
      </div>

      <section class="run-panel" aria-labelledby="run-title">
        <h2 id="run-title">Run</h2>
        <div class="run-grid">
          <div>
            <div
              class={`dropzone${dragOver ? ' over' : ''}`}
              data-dropzone="images"
              onDragOver={(e) => {
                e.preventDefault();
                setDragOver(true);
              }}
              onDragLeave={() => setDragOver(false)}
              onDrop={(e) => {
                e.preventDefault();
                setDragOver(false);
                if (e.dataTransfer?.files) uploadFiles(e.dataTransfer.files);
              }}
            >
              <p>
                Drop images here (JPEG, PNG, WebP) or{' '}
                <button type="button" class="link" onClick={() => fileInput.current?.click()}>
                  choose files
                </button>
              </p>
              <input
                ref={fileInput}
                id="file-input"
                type="file"
                multiple
                accept="image/jpeg,image/png,image/webp"
                class="sr-only"
                aria-label="Upload images"
                onChange={(e) => {
                  const input = e.target as HTMLInputElement;
                  if (input.files) uploadFiles(input.files).then(() => (input.value = ''));
                }}
              />
              {uploading > 0 && <p role="status">Uploading {uploading}…</p>}
            </div>
            <fieldset class="file-picker">
              <legend>Images to run on</legend>
              {files === null && <p class="muted">Loading images…</p>}
              {files?.length === 0 && <p class="empty">No images uploaded yet: drop one above.</p>}
              <ul>
                {(files ?? []).slice(0, 24).map((f) => {
                  const checked = draft.selectedFiles.includes(f.file_id);
                  return (
                    <li key={f.file_id}>
                      <label class={`file-card${checked ? ' checked' : ''}`} data-file={f.filename ?? f.file_id}>
                        <input
                          type="checkbox"
                          checked={checked}
                          onChange={(e) => {
                            const on = (e.target as HTMLInputElement).checked;
                            setDraft((d) => ({
                              ...d,
                              selectedFiles: on
                                ? [...d.selectedFiles, f.file_id]
                                : d.selectedFiles.filter((x) => x !== f.file_id),
                            }));
                          }}
                        />
                        <Thumb file={f} />
                        <span>
                          {f.filename ?? shortId(f.file_id)}
                          <small class="muted">
                            {' '}
                            {f.width}×{f.height}
                          </small>
                        </span>
                      </label>
                    </li>
                  );
                })}
              </ul>
            </fieldset>
            <button type="button" class="primary big" onClick={run} disabled={busy !== null || uploading > 0}>
              {busy === 'run'
                ? 'Starting…'
                : `Run on ${draft.selectedFiles.length || 'no'} image${draft.selectedFiles.length === 1 ? '' : 's'}`}
            </button>
          </div>
          <div>
            <h3>Runs</h3>
            {draft.runs.length === 0 ? (
              <p class="empty">Nothing run from here yet.</p>
            ) : (
              <ul class="runs">
                {draft.runs.map((r) => (
                  <li key={r.executionId} class={r.executionId === draft.watching ? 'watching' : ''}>
                    <button
                      type="button"
                      class="link"
                      aria-pressed={r.executionId === draft.watching}
                      onClick={() => setDraft((d) => ({ ...d, watching: r.executionId }))}
                    >
                      {r.label}
                    </button>{' '}
                    <a href={href(`/executions/${r.executionId}`)}>{shortId(r.executionId)}</a>
                    {r.executionId === draft.watching && watch.record && (
                      <>
                        {' '}
                        <StatusBadge status={watch.record.status} />{' '}
                        {watch.record.execution_time_ms !== null && <span>{fmtMs(watch.record.execution_time_ms)}</span>}
                      </>
                    )}
                  </li>
                ))}
              </ul>
            )}
          </div>
        </div>
        {watch.record && (
          <div class="watched" data-execution={watch.record.execution_id} data-execution-status={watch.record.status}>
            <h3>
              Execution <a href={href(`/executions/${watch.record.execution_id}`)}>{shortId(watch.record.execution_id)}</a>{' '}
              <StatusBadge status={watch.record.status} />
              {watch.live && !TERMINAL.has(watch.record.status) && <span class="muted"> live</span>}
              {watch.record.execution_time_ms !== null && <span> in {fmtMs(watch.record.execution_time_ms)}</span>}
            </h3>
            {!TERMINAL.has(watch.record.status) && (
              <button
                type="button"
                class="secondary"
                onClick={() => api.cancelExecution(watch.record!.execution_id).catch((e) => showError(e, 'Cancel'))}
              >
                Cancel execution
              </button>
            )}
            {watch.record.error && (
              <p class="banner error" role="alert">
                {watch.record.error}
              </p>
            )}
            {watch.error && <p class="banner error">{watch.error}</p>}
            {several && (
              <InputGrid
                record={watch.record}
                selected={followed}
                onSelect={(i) => setFollowed((f) => (f === i ? null : i))}
              />
            )}
            {several && followed === null ? (
              <p class="muted">The steps show every input's progress. Pick an input to follow it on the canvas and see its outputs.</p>
            ) : (
              <Results
                record={forInput(watch.record, followed ?? 0)}
                definition={watchedRun?.definition ?? null}
                input={watchedInput}
              />
            )}
          </div>
        )}
      </section>
      {ghost && (
        <div class="ghost" style={{ left: `${ghost.x}px`, top: `${ghost.y}px` }} aria-hidden="true">
          {ghost.component}
        </div>
      )}
    </div>
  );
}
