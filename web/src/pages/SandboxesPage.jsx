import { useCallback, useEffect, useMemo, useState } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api } from '../api.js';
import { age, mb } from '../format.js';
import { Button, Card, Empty, ErrorBanner, Loading, PageHeader, StatusBadge, useAction } from '../components/ui.jsx';
import Icon from '../components/Icon.jsx';

// useSandboxes loads the team's sandboxes and templates and refreshes the
// list every few seconds (statuses change on their own: timeouts, pauses).
export function useSandboxes() {
  const [sandboxes, setSandboxes] = useState(null);
  const [templates, setTemplates] = useState(null);
  const [error, setError] = useState(null);

  const load = useCallback(async () => {
    try {
      const [s, t] = await Promise.all([api.get('/v1/sandboxes'), api.get('/v1/templates')]);
      s.sort((a, b) => new Date(b.created_at) - new Date(a.created_at));
      setSandboxes(s);
      setTemplates(t);
      setError(null);
    } catch (e) {
      setError(e);
    }
  }, []);

  useEffect(() => {
    load();
    const t = setInterval(() => {
      if (document.visibilityState === 'visible') load();
    }, 5000);
    return () => clearInterval(t);
  }, [load]);

  return { sandboxes, setSandboxes, templates, error, load };
}

export function templateName(templates, id) {
  return templates?.find((t) => t.id === id)?.name || id;
}

export default function SandboxesPage() {
  const { sandboxes, setSandboxes, templates, error, load } = useSandboxes();
  const [showCreate, setShowCreate] = useState(false);
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);

  function replace(sb) {
    setSandboxes((list) => list.map((x) => (x.id === sb.id ? sb : x)));
  }
  function remove(id) {
    setSandboxes((list) => list.filter((x) => x.id !== id));
  }

  return (
    <>
      <PageHeader title="Sandboxes" subtitle="Isolated microVMs for your agents and code.">
        <Button variant="primary" onClick={() => setShowCreate((s) => !s)} data-testid="new-sandbox">
          {showCreate ? 'Close' : '+ New sandbox'}
        </Button>
      </PageHeader>
      {showCreate && (
        <CreateSandbox
          templates={templates}
          onCreated={(sb) => {
            setSandboxes((list) => [sb, ...(list || []).filter((x) => x.id !== sb.id)]);
            setShowCreate(false);
          }}
        />
      )}
      {error && !sandboxes && <ErrorBanner error={error} onRetry={load} />}
      {error && sandboxes && <ErrorBanner error={`Refresh failed: ${error.message}`} onRetry={load} />}
      {!sandboxes && !error && <Loading label="Loading sandboxes…" />}
      {sandboxes && sandboxes.length === 0 && (
        <Empty title="No sandboxes yet" icon={<Icon name="sandbox" size={28} />}>
          Create one with <strong>+ New sandbox</strong>, or from code with an E2B SDK and an API key.
        </Empty>
      )}
      {sandboxes && sandboxes.length > 0 && (
        <Card className="card-flush">
          <table className="table responsive" data-testid="sandbox-table">
            <thead>
              <tr>
                <th>Sandbox</th>
                <th>Status</th>
                <th>Template</th>
                <th>Resources</th>
                <th>Age</th>
                <th className="right">Actions</th>
              </tr>
            </thead>
            <tbody>
              {sandboxes.map((sb) => (
                <SandboxRow
                  key={sb.id}
                  sb={sb}
                  now={now}
                  template={templateName(templates, sb.template_id)}
                  onChange={replace}
                  onGone={remove}
                />
              ))}
            </tbody>
          </table>
        </Card>
      )}
    </>
  );
}

function SandboxRow({ sb, template, now, onChange, onGone }) {
  return (
    <tr data-testid="sandbox-row" data-id={sb.id}>
      <td data-label="Sandbox">
        <Link to={`/sandboxes/${sb.id}`} className="mono strong">
          {sb.id}
        </Link>
        {sb.error && <div className="cell-error">{sb.error}</div>}
      </td>
      <td data-label="Status">
        <StatusBadge status={sb.status} />
      </td>
      <td data-label="Template">{template}</td>
      <td data-label="Resources" className="nowrap">
        {sb.vcpus} vCPU · {mb(sb.memory_mb)} · {mb(sb.disk_size_mb)} disk
      </td>
      <td data-label="Age" title={sb.created_at}>
        {age(sb.created_at, now)}
      </td>
      <td data-label="Actions" className="right">
        <SandboxActions sb={sb} onChange={onChange} onGone={onGone} compact />
      </td>
    </tr>
  );
}

// SandboxActions: pause / resume / destroy with loading and error states.
export function SandboxActions({ sb, onChange, onGone, compact }) {
  const { busy, error, setError, run } = useAction();
  const [confirm, setConfirm] = useState(false);
  const base = `/v1/sandboxes/${sb.id}`;

  const act = (name) =>
    run(name, async () => {
      try {
        onChange(await api.post(`${base}/${name}`));
      } catch (e) {
        if (e.status === 501) throw new Error(`${name === 'pause' ? 'Pause' : 'Resume'} is not supported by this server yet.`);
        throw e;
      }
    });
  const destroy = () =>
    run('destroy', async () => {
      await api.del(base);
      setConfirm(false);
      onGone(sb.id);
    });

  const transitional = ['creating', 'pausing', 'resuming', 'stopping'].includes(sb.status);
  return (
    <div className={`actions ${compact ? 'actions-compact' : ''}`}>
      <div className="btn-row">
        {sb.status === 'running' && (
          <Button className="btn-small" loading={busy === 'pause'} disabled={!!busy} onClick={() => act('pause')}>
            Pause
          </Button>
        )}
        {sb.status === 'paused' && (
          <Button className="btn-small" loading={busy === 'resume'} disabled={!!busy} onClick={() => act('resume')}>
            Resume
          </Button>
        )}
        {!confirm ? (
          <Button
            className="btn-small"
            variant="danger-ghost"
            disabled={!!busy || transitional}
            onClick={() => setConfirm(true)}
          >
            Destroy
          </Button>
        ) : (
          <>
            <Button className="btn-small" variant="danger" loading={busy === 'destroy'} onClick={destroy}>
              Confirm destroy
            </Button>
            <Button className="btn-small" variant="ghost" disabled={!!busy} onClick={() => setConfirm(false)}>
              Cancel
            </Button>
          </>
        )}
      </div>
      {error && (
        <div className="inline-error" role="alert">
          {error.message}
          <button type="button" className="link-btn" onClick={() => setError(null)}>
            dismiss
          </button>
        </div>
      )}
    </div>
  );
}

function CreateSandbox({ templates, onCreated }) {
  const navigate = useNavigate();
  const sorted = useMemo(
    () => (templates ? [...templates].sort((a, b) => a.kind.localeCompare(b.kind) || a.name.localeCompare(b.name)) : []),
    [templates],
  );
  const [templateId, setTemplateId] = useState('');
  const tpl = sorted.find((t) => t.id === templateId) || sorted.find((t) => t.name === 'base') || sorted[0];
  const [vcpus, setVcpus] = useState('');
  const [memory, setMemory] = useState('');
  const [diskGB, setDiskGB] = useState('20');
  const [timeout, setTimeoutS] = useState('3600');
  const { busy, error, run } = useAction();
  const fixed = tpl?.kind === 'snapshot';

  async function submit(e) {
    e.preventDefault();
    const body = { template: tpl.id, timeout_s: Number(timeout) };
    if (!fixed && vcpus) body.vcpus = Number(vcpus);
    if (!fixed && memory) body.memory_mb = Number(memory);
    if (diskGB) body.disk_size_mb = Math.round(Number(diskGB) * 1024);
    const sb = await run('create', () => api.post('/v1/sandboxes', body));
    if (sb) {
      onCreated(sb);
      navigate(`/sandboxes/${sb.id}`);
    }
  }

  return (
    <Card title="New sandbox" className="create-card">
      {!templates && <Loading label="Loading templates…" />}
      {templates && sorted.length === 0 && <Empty title="No templates">Build the platform images with <code>hearth image build</code>.</Empty>}
      {templates && sorted.length > 0 && (
        <form className="form grid-form" onSubmit={submit} data-testid="create-sandbox-form">
          <label className="field span-2">
            <span>Template</span>
            <select name="template" value={tpl?.id || ''} onChange={(e) => setTemplateId(e.target.value)}>
              {sorted.map((t) => (
                <option key={t.id} value={t.id}>
                  {t.name} ({t.kind}
                  {t.platform ? ', platform' : ''}) · {t.vcpus} vCPU · {mb(t.memory_mb)}
                </option>
              ))}
            </select>
          </label>
          <label className="field">
            <span>vCPUs</span>
            <input
              name="vcpus"
              type="number"
              min="1"
              max="16"
              placeholder={String(tpl?.vcpus ?? '')}
              value={fixed ? '' : vcpus}
              disabled={fixed}
              onChange={(e) => setVcpus(e.target.value)}
            />
          </label>
          <label className="field">
            <span>Memory (MB)</span>
            <input
              name="memory_mb"
              type="number"
              min="128"
              max="65536"
              step="128"
              placeholder={String(tpl?.memory_mb ?? '')}
              value={fixed ? '' : memory}
              disabled={fixed}
              onChange={(e) => setMemory(e.target.value)}
            />
          </label>
          <label className="field">
            <span>Disk (GB)</span>
            <input name="disk_gb" type="number" min="1" max="1024" step="1" value={diskGB} onChange={(e) => setDiskGB(e.target.value)} />
          </label>
          <label className="field">
            <span>Timeout (s)</span>
            <input name="timeout_s" type="number" min="1" value={timeout} onChange={(e) => setTimeoutS(e.target.value)} />
          </label>
          {fixed && <p className="hint span-2">Snapshot templates keep the vCPUs and memory baked into the snapshot.</p>}
          <div className="span-2">
            <ErrorBanner error={error} />
          </div>
          <div className="span-2 form-actions">
            <Button type="submit" variant="primary" loading={busy === 'create'} data-testid="create-sandbox">
              {busy === 'create' ? 'Starting sandbox…' : 'Create sandbox'}
            </Button>
          </div>
        </form>
      )}
    </Card>
  );
}
