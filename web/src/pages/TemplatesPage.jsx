import { useCallback, useEffect, useState } from 'react';
import { Link } from 'react-router-dom';
import { api } from '../api.js';
import { dateTime, mb } from '../format.js';
import { Button, Card, Empty, ErrorBanner, Loading, PageHeader, useAction } from '../components/ui.jsx';
import Icon from '../components/Icon.jsx';
import BuildsCard from './BuildsCard.jsx';

export function TemplateTable({ templates, actions, showTeam, testid }) {
  return (
    <table className="table responsive" data-testid={testid}>
      <thead>
        <tr>
          <th>Name</th>
          <th>Kind</th>
          {showTeam && <th>Team</th>}
          <th>Resources</th>
          <th>Created</th>
          {actions && <th className="right" />}
        </tr>
      </thead>
      <tbody>
        {templates.map((t) => (
          <tr key={t.id} data-testid="template-row" data-name={t.name}>
            <td data-label="Name">
              <span className="strong">{t.name}</span>
              <div className="mono muted small">{t.id}</div>
            </td>
            <td data-label="Kind">
              <span className="tags">
                <span className={`tag tag-${t.kind}`}>{t.kind}</span>
                {t.platform && <span className="tag tag-platform">platform</span>}
              </span>
            </td>
            {showTeam && (
              <td data-label="Team" className="mono small">
                {t.platform ? 'platform' : t.team_id}
              </td>
            )}
            <td data-label="Resources" className="nowrap">
              {t.vcpus} vCPU · {mb(t.memory_mb)} · {mb(t.disk_size_mb)}
            </td>
            <td data-label="Created" className="nowrap">
              {dateTime(t.created_at)}
            </td>
            {actions && (
              <td data-label="" className="right">
                {actions(t)}
              </td>
            )}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export default function TemplatesPage() {
  const [templates, setTemplates] = useState(null);
  const [all, setAll] = useState([]);
  const [snapshots, setSnapshots] = useState(null);
  const [sandboxes, setSandboxes] = useState([]);
  const [error, setError] = useState(null);
  const { busy, error: actionError, setError: setActionError, run } = useAction();
  const [form, setForm] = useState({ sandbox: '', name: '' });

  const load = useCallback(async () => {
    setError(null);
    try {
      const [t, s, sbs] = await Promise.all([api.get('/v1/templates'), api.get('/v1/snapshots'), api.get('/v1/sandboxes')]);
      setAll(t);
      setTemplates(t.filter((x) => x.kind !== 'snapshot' && !x.built));
      setSnapshots(s);
      setSandboxes(sbs.filter((x) => x.status === 'running' || x.status === 'paused'));
    } catch (e) {
      setError(e);
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);

  async function createSnapshot(e) {
    e.preventDefault();
    const sandbox = form.sandbox || sandboxes[0]?.id;
    const t = await run('create', () => api.post('/v1/snapshots', { sandbox_id: sandbox, name: form.name }));
    if (t) {
      setForm({ sandbox: '', name: '' });
      load();
    }
  }

  async function remove(t) {
    const ok = await run(`del:${t.name}`, async () => {
      await api.del(`/v1/snapshots/${encodeURIComponent(t.name)}`);
      return true;
    });
    if (ok) setSnapshots((s) => s.filter((x) => x.id !== t.id));
  }

  return (
    <>
      <PageHeader title="Templates & snapshots" subtitle="Base images boot fresh VMs; snapshots resume frozen ones instantly." />
      {error && <ErrorBanner error={error} onRetry={load} />}
      <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />

      <Card title="Snapshots">
        <form className="inline-form" onSubmit={createSnapshot}>
          <select
            aria-label="Sandbox to snapshot"
            value={form.sandbox}
            onChange={(e) => setForm({ ...form, sandbox: e.target.value })}
            disabled={sandboxes.length === 0}
          >
            {sandboxes.length === 0 && <option value="">No running sandbox</option>}
            {sandboxes.map((s) => (
              <option key={s.id} value={s.id}>
                {s.id} ({s.status})
              </option>
            ))}
          </select>
          <input
            aria-label="Snapshot name"
            placeholder="snapshot-name"
            pattern="[a-z0-9][a-z0-9\-_.]{0,62}"
            title="lowercase letters, digits, - _ . (up to 63)"
            required
            value={form.name}
            onChange={(e) => setForm({ ...form, name: e.target.value })}
          />
          <Button type="submit" variant="primary" loading={busy === 'create'} disabled={sandboxes.length === 0}>
            {busy === 'create' ? 'Snapshotting…' : 'Create snapshot'}
          </Button>
        </form>
        {!snapshots && !error && <Loading label="Loading snapshots…" />}
        {snapshots && snapshots.length === 0 && (
          <Empty title="No snapshots yet" icon={<Icon name="layers" size={28} />}>
            Snapshot a running sandbox here or from its <Link to="/sandboxes">page</Link>.
          </Empty>
        )}
        {snapshots && snapshots.length > 0 && (
          <TemplateTable
            testid="snapshots-table"
            templates={snapshots}
            actions={(t) => (
              <Button className="btn-small" variant="danger-ghost" loading={busy === `del:${t.name}`} onClick={() => remove(t)}>
                Delete
              </Button>
            )}
          />
        )}
      </Card>

      <BuildsCard templates={all.filter((x) => x.built)} onChange={load} />

      <Card title="Base templates" className="card-flush-body">
        {!templates && !error && <Loading label="Loading templates…" />}
        {templates && templates.length === 0 && <Empty title="No templates" />}
        {templates && templates.length > 0 && <TemplateTable testid="templates-table" templates={templates} />}
      </Card>
    </>
  );
}
