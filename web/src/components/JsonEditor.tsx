import { useState } from 'preact/hooks';
import type { Parsed } from '../editors';

interface Props<T> {
  id: string;
  label: string;
  /** What the fields hold now, as JSON text. */
  json: string;
  hint: string;
  parse: (text: string) => Parsed<T>;
  onApply: (value: T) => void;
  /** A message from the server about these fields. */
  error?: string;
}

/**
 * Fields the canvas has no form for: shown read-only, so nothing is hidden,
 * and editable as JSON on request; a parse or shape error keeps the text for
 * fixing instead of applying part of it.
 */
export function JsonEditor<T>({ id, label, json, hint, parse, onApply, error }: Props<T>) {
  const [text, setText] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const shown = problem ?? error;
  return (
    <div class="field json-field" data-json={id}>
      <label for={id}>{label}</label>
      {text === null ? (
        <>
          <pre id={id} class="json-readonly" tabIndex={0} aria-describedby={`${id}-hint`} data-json-readonly>
            {json}
          </pre>
          <button type="button" class="link" onClick={() => setText(json)}>
            Edit as JSON
          </button>
        </>
      ) : (
        <>
          <textarea
            id={id}
            rows={Math.min(12, Math.max(3, text.split('\n').length + 1))}
            spellcheck={false}
            value={text}
            aria-invalid={problem ? 'true' : undefined}
            aria-describedby={`${id}-hint`}
            onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          />
          <div class="row">
            <button
              type="button"
              class="secondary"
              onClick={() => {
                const r = parse(text);
                if (r.error !== undefined) {
                  setProblem(r.error);
                  return;
                }
                setProblem(null);
                setText(null);
                onApply(r.value);
              }}
            >
              Apply
            </button>
            <button
              type="button"
              class="link"
              onClick={() => {
                setProblem(null);
                setText(null);
              }}
            >
              Cancel
            </button>
          </div>
        </>
      )}
      <small id={`${id}-hint`} class="muted">
        {hint}
      </small>
      {shown && (
        <small class="field-error" role="alert">
          {shown}
        </small>
      )}
    </div>
  );
}
