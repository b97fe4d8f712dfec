import { useCallback, useEffect, useState } from 'react';
import { api } from '../api.js';
import { dateTime, mb } from '../format.js';
import { Button, Card, Empty, ErrorBanner, Loading, PageHeader, useAction } from '../components/ui.jsx';
import Icon from '../components/Icon.jsx';
import { TemplateTable } from './TemplatesPage.jsx';

function useAdmin(path) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  const load = useCallback(async () => {
    setError(null);
    try {
      setData(await api.get(path));
    } catch (e) {
      setError(e);
    }
  }, [path]);
  useEffect(() => {
    load();
  }, [load]);
  return { data, error, load };
}

function NotAllowed() {
  return (
    <Empty title="Not allowed" icon={<Icon name="lock" size={28} />}>
      <span data-testid="not-allowed">This page is for platform admins. Ask an admin to run <code>hearth admin promote --email you@…</code>.</span>
    </Empty>
  );
}

export function AdminTemplatesPage() {
  const { data, error, load } = useAdmin('/v1/admin/templates');
  return (
    <>
      <PageHeader title="All templates" subtitle="Every team's templates and snapshots (platform admins)." />
      {error?.status === 403 && <NotAllowed />}
      {error && error.status !== 403 && <ErrorBanner error={error} onRetry={load} />}
      {!data && !error && <Loading label="Loading templates…" />}
      {data && data.length === 0 && <Empty title="No templates" />}
      {data && data.length > 0 && (
        <Card className="card-flush">
          <TemplateTable testid="admin-templates-table" templates={data} showTeam />
        </Card>
      )}
    </>
  );
}

export function AdminHostsPage() {
  const { data, error, load } = useAdmin('/v1/admin/hosts');
  const [token, setToken] = useState(null);
  const { busy, error: actionError, setError: setActionError, run } = useAction();
  // 404/405/501: an older server without the route; 503: a control plane
  // that does not manage a fleet (one agent given by --agent-url).
  const missing = error && [404, 405, 501, 503].includes(error.status);

  async function createToken() {
    const t = await run('token', () => api.post('/v1/admin/hosts', {}));
    if (t) setToken(t);
  }

  return (
    <>
      <PageHeader title="Hosts" subtitle="Machines running hearth agents.">
        {!error && (
          <Button loading={busy === 'token'} onClick={createToken}>
            Registration token
          </Button>
        )}
      </PageHeader>
      <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />
      {token && (
        <div className="secret-box">
          <div className="secret-head">
            One-time host registration token, valid until {dateTime(token.expires_at)}. It is shown only once.
          </div>
          <code className="secret">{token.token}</code>
          <div className="hint">
            CA fingerprint: <code>{token.ca_fingerprint}</code>
          </div>
          <Button className="btn-small btn-ghost" onClick={() => setToken(null)}>
            Done
          </Button>
        </div>
      )}
      {error?.status === 403 && <NotAllowed />}
      {missing && (
        <Empty title="No host fleet" icon={<Icon name="server" size={28} />}>
          <span data-testid="no-fleet">
            {error.status === 503 ? error.message : 'This server does not list hosts.'}
          </span>
        </Empty>
      )}
      {error && error.status !== 403 && !missing && <ErrorBanner error={error} onRetry={load} />}
      {!data && !error && <Loading label="Loading hosts…" />}
      {data && data.length === 0 && <Empty title="No hosts registered" icon={<Icon name="server" size={28} />} />}
      {data && data.length > 0 && (
        <Card className="card-flush">
          <table className="table responsive" data-testid="hosts-table">
            <thead>
              <tr>
                <th>Host</th>
                <th>Status</th>
                <th>Address</th>
                <th>Used / capacity</th>
                <th>Sandboxes</th>
                <th>Last heartbeat</th>
              </tr>
            </thead>
            <tbody>
              {data.map((h) => (
                <tr key={h.id}>
                  <td data-label="Host">
                    <span className="strong">{h.name || h.id}</span>
                    <div className="mono muted small">{h.id}</div>
                  </td>
                  <td data-label="Status">
                    <span className={`tag tag-host-${h.status}`}>{h.status}</span>
                  </td>
                  <td data-label="Address" className="mono small">
                    {h.address || '—'}
                  </td>
                  <td data-label="Used / capacity" className="nowrap">
                    {h.usage?.vcpus ?? 0}/{h.capacity?.vcpus ?? '?'} vCPU · {mb(h.usage?.memory_mb ?? 0)}/{mb(h.capacity?.memory_mb)}
                  </td>
                  <td data-label="Sandboxes">{h.sandbox_count}</td>
                  <td data-label="Last heartbeat">{h.last_heartbeat ? dateTime(h.last_heartbeat) : 'never'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
      )}
    </>
  );
}
