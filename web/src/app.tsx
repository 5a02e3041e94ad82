import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, onUnauthorized, tokenStore } from './api';
import { onAnnounce } from './announce';
import { TokenDialog } from './components/TokenDialog';
import { CanvasPage } from './pages/CanvasPage';
import { DashboardPage } from './pages/DashboardPage';
import { ExecutionPage } from './pages/ExecutionPage';
import { ExecutionsPage } from './pages/ExecutionsPage';
import { useRoute } from './router';
import type { Component, UiConfig } from './types';

const NAV = [
  { path: '', label: 'Canvas' },
  { path: 'executions', label: 'Executions' },
  { path: 'dashboard', label: 'Dashboard' },
];

export function App() {
  const route = useRoute();
  const [components, setComponents] = useState<Component[] | null>(null);
  const [loadError, setLoadError] = useState<ApiError | null>(null);
  const [config, setConfig] = useState<UiConfig | null>(null);
  const [tokenOpen, setTokenOpen] = useState(false);
  const [tokenReason, setTokenReason] = useState<string | null>(null);
  // Bumped when the token changes: pages remount and load again.
  const [epoch, setEpoch] = useState(0);
  const [message, setMessage] = useState('');

  useEffect(
    () =>
      onUnauthorized((e) => {
        setTokenReason(e.message);
        setTokenOpen(true);
      }),
    [],
  );
  useEffect(() => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const off = onAnnounce((m) => {
      setMessage(m);
      clearTimeout(timer);
      timer = setTimeout(() => setMessage(''), 6000);
    });
    return () => {
      off();
      clearTimeout(timer);
    };
  }, []);
  useEffect(() => {
    api.uiConfig().then(setConfig, () => setConfig({ version: '', jaegerUiUrl: null }));
  }, []);
  useEffect(() => {
    setLoadError(null);
    api.components().then(setComponents, (e: ApiError) => setLoadError(e));
  }, [epoch]);

  const section = route.path[0] ?? '';
  // A new page takes the focus to its content, so screen readers announce it
  // and Tab continues from there (not on the first load: Tab starts at the skip link).
  const firstRoute = useRef(true);
  const routeKey = `${section}/${route.path[1] ?? ''}`;
  useEffect(() => {
    if (firstRoute.current) {
      firstRoute.current = false;
      return;
    }
    document.getElementById('main')?.focus();
  }, [routeKey]);
  useEffect(() => {
    const label = NAV.find((n) => n.path === section)?.label ?? 'Execution';
    document.title = `${route.path[1] && section === 'executions' ? 'Execution' : label} · ImageFlowCanvas`;
  }, [section, route.path[1]]);

  let page;
  if (loadError && loadError.status !== 401) {
    page = (
      <div class="page">
        <p class="banner error" role="alert">
          Cannot load the component registry: {loadError.message}{' '}
          <button type="button" onClick={() => setEpoch((n) => n + 1)}>
            Retry
          </button>
        </p>
      </div>
    );
  } else if (section === 'executions' && route.path[1]) {
    page = <ExecutionPage key={`${route.path[1]}-${epoch}`} id={route.path[1]} config={config} />;
  } else if (section === 'executions') {
    page = <ExecutionsPage key={epoch} route={route} />;
  } else if (section === 'dashboard') {
    page = <DashboardPage key={epoch} />;
  } else if (section === '') {
    page = components ? (
      <CanvasPage key={epoch} components={components} route={route} />
    ) : (
      <div class="page">
        <p class="muted">{loadError ? 'Waiting for an API token…' : 'Loading the component registry…'}</p>
      </div>
    );
  } else {
    page = (
      <div class="page">
        <h1>Not found</h1>
        <p>
          Nothing at <code>{window.location.hash}</code>. <a href="#/">Back to the canvas</a>.
        </p>
      </div>
    );
  }

  const hasToken = tokenStore.get() !== null;
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault();
        document.getElementById('main')?.focus();
      }}>
        Skip to content
      </a>
      <header class="top">
        <span class="brand">ImageFlowCanvas</span>
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.path}>
                <a href={`#/${n.path}`} aria-current={section === n.path ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <button
          type="button"
          class="secondary token-button"
          onClick={() => {
            setTokenReason(null);
            setTokenOpen(true);
          }}
        >
          {hasToken ? 'API token: set' : 'API token'}
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {page}
      </main>
      <div class="live" role="status" aria-live="polite">
        {message}
      </div>
      <TokenDialog
        open={tokenOpen}
        reason={tokenReason}
        onClose={(changed) => {
          setTokenOpen(false);
          if (changed) setEpoch((n) => n + 1);
        }}
      />
    </>
  );
}
