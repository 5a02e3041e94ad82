import { useState } from 'preact/hooks';
import { announce } from '../announce';
import { fmtBytes } from '../format';
import { fileUrl } from '../hooks';
import type { Detection, ExecutionRecord, FileRecord, PipelineDefinition, StepRecord } from '../types';
import { classColor, DetectionImage } from './DetectionImage';

interface Props {
  record: ExecutionRecord;
  /** The pipeline that ran, when known: says which image each detection saw. */
  definition?: PipelineDefinition | null;
  input?: FileRecord | null;
}

interface Shown {
  key: string;
  title: string;
  fileId: string;
  width: number;
  height: number;
  contentType: string;
  sizeBytes?: number;
  step?: StepRecord;
  detections: Detection[];
  detectionsFrom?: string;
}

function extension(contentType: string): string {
  return { 'image/png': 'png', 'image/webp': 'webp' }[contentType] ?? 'jpg';
}

async function download(fileId: string, name: string): Promise<void> {
  const url = await fileUrl(fileId);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

/**
 * What an execution produced: each step's output image, the detections drawn
 * from the returned boxes on the image the detector saw (and on later
 * outputs of the same size), a table of the detections, and downloads.
 */
export function Results({ record, definition, input }: Props) {
  const [showBoxes, setShowBoxes] = useState(true);
  const byStep = new Map(record.steps.map((s) => [s.stepId, s]));
  const depsOf = (stepId: string) => definition?.steps.find((s) => s.stepId === stepId)?.dependencies ?? null;

  // The image a step worked on: its first dependency's output, the input for a root.
  const sourceOf = (step: StepRecord): { fileId: string; width: number; height: number } | null => {
    const deps = depsOf(step.stepId);
    if (deps === null) return null;
    for (const d of deps) {
      const o = byStep.get(d)?.output;
      if (o) return { fileId: o.file_id, width: o.width, height: o.height };
    }
    if (deps.length === 0 && input) return { fileId: input.file_id, width: input.width, height: input.height };
    return null;
  };

  const detectors = record.steps.filter((s) => (s.detections?.length ?? 0) > 0);
  const shown: Shown[] = [];
  if (input) {
    shown.push({
      key: 'input',
      title: `Input${input.filename ? `: ${input.filename}` : ''}`,
      fileId: input.file_id,
      width: input.width,
      height: input.height,
      contentType: input.content_type,
      sizeBytes: input.size_bytes,
      detections: [],
    });
  }
  const ordered = [...record.steps].sort((a, b) => a.level - b.level);
  for (const step of ordered) {
    if (step.detections && step.detections.length > 0) {
      // Boxes are in the pixels of the image the detector was given.
      const source = sourceOf(step);
      const img = source ?? (step.output ? { fileId: step.output.file_id, width: step.output.width, height: step.output.height } : null);
      if (img) {
        shown.push({
          key: `${step.stepId}-detections`,
          title: `${step.stepId}: ${step.detections.length} detection${step.detections.length === 1 ? '' : 's'}`,
          fileId: img.fileId,
          width: img.width,
          height: img.height,
          contentType: step.output?.content_type ?? 'image/jpeg',
          step,
          detections: step.detections,
          detectionsFrom: step.stepId,
        });
      }
      continue;
    }
    if (!step.output) continue;
    // Later outputs of the detector's image size get its boxes drawn too,
    // unless the detector drew them into the image itself (draw_boxes).
    const drewBoxes = (d: StepRecord) =>
      definition?.steps.find((s) => s.stepId === d.stepId)?.parameters?.draw_boxes !== false;
    const carried = detectors
      .filter((d) => d.level < step.level && definition && !drewBoxes(d))
      .filter((d) => {
        const src = sourceOf(d) ?? d.output;
        return src && src.width === step.output!.width && src.height === step.output!.height;
      })
      .flatMap((d) => d.detections ?? []);
    shown.push({
      key: step.stepId,
      title: `${step.stepId} (${step.componentName})`,
      fileId: step.output.file_id,
      width: step.output.width,
      height: step.output.height,
      contentType: step.output.content_type,
      sizeBytes: step.output.size_bytes,
      step,
      detections: carried,
    });
  }
  const outputs = record.steps.filter((s) => s.output);
  const allDetections = detectors.flatMap((d) => (d.detections ?? []).map((det) => ({ step: d.stepId, ...det })));

  if (shown.length === 0) {
    return <p class="empty">No images yet: outputs appear here as steps complete.</p>;
  }
  return (
    <section class="results" aria-label="Results">
      <div class="row wrap">
        <label class="inline">
          <input type="checkbox" checked={showBoxes} onChange={(e) => setShowBoxes((e.target as HTMLInputElement).checked)} />{' '}
          Draw detection boxes
        </label>
        {outputs.length > 0 && (
          <button
            type="button"
            class="secondary"
            onClick={async () => {
              for (const s of outputs) {
                await download(s.output!.file_id, `${record.execution_id}-${s.stepId}.${extension(s.output!.content_type)}`);
              }
              announce(`Downloading ${outputs.length} images`);
            }}
          >
            Download all outputs ({outputs.length})
          </button>
        )}
        {allDetections.length > 0 && (
          <button
            type="button"
            class="secondary"
            onClick={() => {
              const blob = new Blob([JSON.stringify(allDetections, null, 2)], { type: 'application/json' });
              const a = document.createElement('a');
              a.href = URL.createObjectURL(blob);
              a.download = `${record.execution_id}-detections.json`;
              a.click();
              setTimeout(() => URL.revokeObjectURL(a.href), 1000);
            }}
          >
            Download detections (JSON)
          </button>
        )}
      </div>
      <div class="result-grid">
        {shown.map((s) => (
          <figure class="result" key={s.key} data-result={s.key}>
            <DetectionImage
              fileId={s.fileId}
              width={s.width}
              height={s.height}
              alt={s.title}
              detections={showBoxes ? s.detections : []}
            />
            <figcaption>
              <strong>{s.title}</strong>
              <span class="muted">
                {' '}
                {s.width}×{s.height}
                {s.sizeBytes ? ` · ${fmtBytes(s.sizeBytes)}` : ''}
              </span>
              {!s.detectionsFrom && (
                <button
                  type="button"
                  class="link"
                  onClick={() => download(s.fileId, `${record.execution_id}-${s.key}.${extension(s.contentType)}`)}
                >
                  Download
                </button>
              )}
            </figcaption>
            {s.detectionsFrom && (
              <table class="detections">
                <caption class="sr-only">Detections of {s.detectionsFrom}</caption>
                <thead>
                  <tr>
                    <th scope="col">Class</th>
                    <th scope="col">Confidence</th>
                    <th scope="col">Box (x1, y1, x2, y2)</th>
                  </tr>
                </thead>
                <tbody>
                  {s.detections.map((d, i) => (
                    <tr key={i}>
                      <td>
                        <span class="swatch" style={{ background: classColor(d.class_id) }} aria-hidden="true" />
                        {d.class_name}
                      </td>
                      <td>{d.confidence.toFixed(2)}</td>
                      <td>
                        {[d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map((v) => Math.round(v)).join(', ')}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </figure>
        ))}
      </div>
    </section>
  );
}
