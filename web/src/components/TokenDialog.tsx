import { useEffect, useRef, useState } from 'preact/hooks';
import { tokenStore } from '../api';

interface Props {
  open: boolean;
  reason: string | null;
  onClose: (changed: boolean) => void;
}

/** Asks for the API's bearer token (IMAGEFLOW_API_TOKENS on the backend). */
export function TokenDialog({ open, reason, onClose }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  const [token, setToken] = useState('');
  const [remember, setRemember] = useState(false);
  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (open && !d.open) {
      setToken('');
      d.showModal();
    } else if (!open && d.open) d.close();
  }, [open]);
  const has = tokenStore.get() !== null;
  return (
    <dialog
      ref={dialog}
      class="token-dialog"
      aria-labelledby="token-title"
      onCancel={(e) => {
        e.preventDefault();
        onClose(false);
      }}
    >
      <form
        method="dialog"
        onSubmit={(e) => {
          e.preventDefault();
          if (!token.trim()) return;
          tokenStore.set(token.trim(), remember);
          onClose(true);
        }}
      >
        <h2 id="token-title">API token</h2>
        {reason && (
          <p class="banner error" role="alert">
            {reason}
          </p>
        )}
        <p>
          This backend requires a bearer token (its <code>IMAGEFLOW_API_TOKENS</code> setting). Ask its operator
          for one.
        </p>
        <label for="token-input">Token</label>
        <input
          id="token-input"
          name="token"
          type="password"
          autocomplete="off"
          required
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
        />
        <label class="inline">
          <input
            type="checkbox"
            checked={remember}
            onChange={(e) => setRemember((e.target as HTMLInputElement).checked)}
          />{' '}
          Remember on this device (else only in this tab)
        </label>
        <div class="row end">
          {has && (
            <button
              type="button"
              class="secondary"
              onClick={() => {
                tokenStore.set(null, false);
                onClose(true);
              }}
            >
              Forget token
            </button>
          )}
          <button type="button" class="secondary" onClick={() => onClose(false)}>
            Cancel
          </button>
          <button type="submit">Use token</button>
        </div>
      </form>
    </dialog>
  );
}
