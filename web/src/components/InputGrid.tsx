import { useEffect, useState } from 'preact/hooks';
import { api } from '../api';
import { fmtMs, shortId } from '../format';
import { useFileUrl } from '../hooks';
import { inputsLine, stepsDone } from '../progress';
import type { ExecutionRecord, InputResult } from '../types';
import { StatusBadge } from './StatusBadge';

interface Props {
  record: ExecutionRecord;
  /** The input whose steps and outputs are shown elsewhere on the page, if any. */
  selected: number | null;
  onSelect: (index: number) => void;
}

/** An uploaded file by its name; an object reference as written. */
function useInputName(input: string): string {
  const reference = input.startsWith('s3://');
  const [name, setName] = useState(reference ? input : shortId(input));
  useEffect(() => {
    setName(reference ? input : shortId(input));
    if (reference) return undefined;
    let live = true;
    api.file(input).then(
      (f) => live && f.filename && setName(f.filename),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [input]);
  return name;
}

function InputTile({ record, result, selected, onSelect }: { record: ExecutionRecord; result: InputResult; selected: boolean; onSelect: () => void }) {
  const name = useInputName(result.input);
  const { url } = useFileUrl(result.output?.file_id);
  return (
    <li
      class={`input-tile st-${result.status}${selected ? ' selected' : ''}`}
      data-input-index={result.index}
      data-status={result.status}
    >
      {url ? (
        <img src={url} alt={`final image of ${name}`} class="input-thumb" data-output={result.output?.file_id} />
      ) : (
        <span class="input-thumb" aria-hidden="true" />
      )}
      {/* The server's messages count inputs from 0 ("input 1 (…) failed"): so do the tiles. */}
      <button type="button" class="link" aria-pressed={selected} title={result.input} onClick={onSelect}>
        input {result.index}: {name}
      </button>
      <div class="row wrap">
        <StatusBadge status={result.status} />
        <span class="muted">{stepsDone(record, result.index)}</span>
        <span class="node-time">{fmtMs(result.execution_time_ms)}</span>
      </div>
      {result.error && <p class="tile-error">{result.error}</p>}
    </li>
  );
}

/** One tile per input of an execution: its final image, source, status, time, and why it failed. */
export function InputGrid({ record, selected, onSelect }: Props) {
  return (
    <section class="inputs" aria-label="Inputs">
      <p role="status" data-inputs-line>
        {inputsLine(record.input_results)}
      </p>
      <ul class="input-grid">
        {record.input_results.map((r) => (
          <InputTile key={r.index} record={record} result={r} selected={selected === r.index} onSelect={() => onSelect(r.index)} />
        ))}
      </ul>
    </section>
  );
}
