import { useCallback, useEffect, useRef, useState } from 'react';
import { api } from '../api.js';
import { mb } from '../format.js';
import { Card, ErrorBanner, Spinner } from './ui.jsx';

// How often the card re-reads the sandbox's usage while it is shown.
const REFRESH_MS = 3000;

// UsageCard shows a running sandbox's live CPU, memory and disk usage, read
// from GET /v1/sandboxes/{id}/metrics every few seconds while the page is
// visible.
export default function UsageCard({ sandboxId, running }) {
  const [usage, setUsage] = useState(null);
  const [error, setError] = useState(null);
  const inFlight = useRef(false);
  const live = useRef(true);

  const load = useCallback(async () => {
    if (inFlight.current) return;
    inFlight.current = true;
    try {
      const m = await api.get(`/v1/sandboxes/${sandboxId}/metrics`);
      if (live.current) {
        setUsage(m);
        setError(null);
      }
    } catch (e) {
      if (live.current) setError(e);
    } finally {
      inFlight.current = false;
    }
  }, [sandboxId]);

  useEffect(() => {
    live.current = true;
    if (!running) {
      setUsage(null);
      setError(null);
      return () => {
        live.current = false;
      };
    }
    load();
    const t = setInterval(() => {
      if (document.visibilityState === 'visible') load();
    }, REFRESH_MS);
    return () => {
      live.current = false;
      clearInterval(t);
    };
  }, [running, load]);

  let body;
  if (!running) {
    body = <p className="muted">Usage is shown while the sandbox is running.</p>;
  } else if (!usage && !error) {
    body = (
      <div className="usage-state">
        <Spinner label="Reading usage…" />
      </div>
    );
  } else {
    body = (
      <>
        {usage && (
          <dl className="usage" data-testid="usage" data-ts={usage.timestamp}>
            <Meter
              testId="usage-cpu"
              label="CPU"
              value={`${usage.cpu_used_pct.toFixed(1)}%`}
              sub={`${usage.cpu_count} vCPU${usage.cpu_count === 1 ? '' : 's'}`}
              pct={usage.cpu_used_pct}
            />
            <Meter
              testId="usage-mem"
              label="Memory"
              value={`${mb(usage.mem_used_mb)} / ${mb(usage.mem_total_mb)}`}
              pct={percent(usage.mem_used_mb, usage.mem_total_mb)}
            />
            <Meter
              testId="usage-disk"
              label="Disk"
              value={`${mb(usage.disk_used_mb)} / ${mb(usage.disk_total_mb)}`}
              pct={percent(usage.disk_used_mb, usage.disk_total_mb)}
            />
          </dl>
        )}
        {error && (
          <ErrorBanner
            error={usage ? `Usage refresh failed: ${error.message}` : `Could not read usage: ${error.message}`}
            onRetry={load}
          />
        )}
      </>
    );
  }
  return (
    <Card title="Usage" className="card-usage">
      <div data-testid="usage-card" data-state={!running ? 'off' : usage ? 'ok' : error ? 'error' : 'loading'}>
        {body}
      </div>
    </Card>
  );
}

function percent(used, total) {
  return total > 0 ? (100 * used) / total : 0;
}

function Meter({ testId, label, value, sub, pct }) {
  const p = Math.max(0, Math.min(100, pct));
  return (
    <div className="usage-item" data-testid={testId}>
      <dt>{label}</dt>
      <dd>
        <span className="usage-value">{value}</span>
        {sub && <span className="usage-sub"> · {sub}</span>}
      </dd>
      <dd className="usage-meter" aria-hidden="true">
        <span className={p >= 90 ? 'usage-bar usage-bar-high' : 'usage-bar'} style={{ width: `${p}%` }} />
      </dd>
    </div>
  );
}
