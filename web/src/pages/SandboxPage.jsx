import { useCallback, useEffect, useState } from 'react';
import { Link, useNavigate, useParams } from 'react-router-dom';
import { api } from '../api.js';
import { age, dateTime, mb } from '../format.js';
import { Button, Card, ErrorBanner, Loading, StatusBadge, useAction } from '../components/ui.jsx';
import Terminal from '../components/Terminal.jsx';
import FileBrowser from '../components/FileBrowser.jsx';
import UsageCard from '../components/UsageCard.jsx';
import { SandboxActions, templateName } from './SandboxesPage.jsx';

export default function SandboxPage() {
  const { id } = useParams();
  const navigate = useNavigate();
  const [sb, setSb] = useState(null);
  const [templates, setTemplates] = useState(null);
  const [error, setError] = useState(null);

  const load = useCallback(async () => {
    try {
      const [s, t] = await Promise.all([api.get(`/v1/sandboxes/${id}`), api.get('/v1/templates')]);
      setSb(s);
      setTemplates(t);
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, [id]);

  useEffect(() => {
    load();
    const t = setInterval(() => {
      if (document.visibilityState === 'visible') load();
    }, 5000);
    return () => clearInterval(t);
  }, [load]);

  if (error && !sb) {
    return (
      <>
        <Breadcrumb id={id} />
        <ErrorBanner error={error.status === 404 ? `Sandbox ${id} does not exist (or was destroyed).` : error} onRetry={error.status === 404 ? undefined : load} />
      </>
    );
  }
  if (!sb) return <Loading label="Loading sandbox…" />;

  const running = sb.status === 'running';
  return (
    <>
      <Breadcrumb id={id} />
      <div className="page-header">
        <div>
          <h1 className="mono">{sb.id}</h1>
          <div className="header-meta">
            <StatusBadge status={sb.status} />
            <span>{templateName(templates, sb.template_id)}</span>
            <span>created {age(sb.created_at)} ago</span>
          </div>
        </div>
        <div className="page-actions">
          <SandboxActions sb={sb} onChange={setSb} onGone={() => navigate('/sandboxes', { replace: true })} />
        </div>
      </div>
      {error && <ErrorBanner error={`Refresh failed: ${error.message}`} onRetry={load} />}
      {sb.error && <ErrorBanner error={`Sandbox error: ${sb.error}`} />}

      <dl className="facts">
        <div>
          <dt>vCPUs</dt>
          <dd>{sb.vcpus}</dd>
        </div>
        <div>
          <dt>Memory</dt>
          <dd>{mb(sb.memory_mb)}</dd>
        </div>
        <div>
          <dt>Disk</dt>
          <dd>{mb(sb.disk_size_mb)}</dd>
        </div>
        <div>
          <dt>Times out</dt>
          <dd title={sb.end_at}>{running ? dateTime(sb.end_at) : '—'}</dd>
        </div>
        <div>
          <dt>Host</dt>
          <dd className="mono">{sb.host || '—'}</dd>
        </div>
        <div>
          <dt>Internet</dt>
          <dd>{sb.allow_internet ? 'allowed' : 'blocked'}</dd>
        </div>
      </dl>

      <UsageCard sandboxId={sb.id} running={running} />

      <Card title="Terminal" className="card-terminal">
        {running ? (
          <Terminal sandboxId={sb.id} />
        ) : (
          <div className="terminal-off">The terminal is available while the sandbox is running (it is {sb.status}).</div>
        )}
      </Card>

      <Card title="Files">
        {running ? <FileBrowser sandboxId={sb.id} /> : <p className="muted">Files can be browsed while the sandbox is running.</p>}
      </Card>

      <SnapshotForm sb={sb} />
    </>
  );
}

function Breadcrumb({ id }) {
  return (
    <nav className="breadcrumb" aria-label="Breadcrumb">
      <Link to="/sandboxes">Sandboxes</Link>
      <span aria-hidden="true">/</span>
      <span className="mono">{id}</span>
    </nav>
  );
}

function SnapshotForm({ sb }) {
  const [name, setName] = useState('');
  const [created, setCreated] = useState(null);
  const { busy, error, run } = useAction();

  async function submit(e) {
    e.preventDefault();
    const t = await run('snap', () => api.post('/v1/snapshots', { sandbox_id: sb.id, name }));
    if (t) {
      setCreated(t);
      setName('');
    }
  }

  return (
    <Card title="Snapshot">
      <p className="muted">
        Freeze this sandbox (memory and disk) into a named template that starts new sandboxes exactly where this one is.
      </p>
      <form className="inline-form" onSubmit={submit}>
        <input
          aria-label="Snapshot name"
          placeholder="snapshot-name"
          pattern="[a-z0-9][a-z0-9\-_.]{0,62}"
          title="lowercase letters, digits, - _ . (up to 63)"
          required
          value={name}
          onChange={(e) => setName(e.target.value)}
        />
        <Button type="submit" loading={busy === 'snap'} disabled={sb.status !== 'running' && sb.status !== 'paused'}>
          {busy === 'snap' ? 'Snapshotting…' : 'Create snapshot'}
        </Button>
      </form>
      <ErrorBanner error={error} />
      {created && (
        <div className="banner banner-ok" role="status">
          Snapshot <strong>{created.name}</strong> created. <Link to="/templates">See templates</Link>
        </div>
      )}
    </Card>
  );
}
