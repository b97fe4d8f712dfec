import { useCallback, useEffect, useState } from 'react';
import { api } from '../api.js';
import { dateTime } from '../format.js';
import { Button, Card, Empty, ErrorBanner, Loading, PageHeader, useAction } from '../components/ui.jsx';
import Icon from '../components/Icon.jsx';

export default function KeysPage() {
  const [keys, setKeys] = useState(null);
  const [error, setError] = useState(null);
  const [name, setName] = useState('');
  const [created, setCreated] = useState(null);
  const [copied, setCopied] = useState(false);
  const { busy, error: actionError, setError: setActionError, run } = useAction();

  const load = useCallback(async () => {
    setError(null);
    try {
      setKeys(await api.get('/v1/api-keys'));
    } catch (e) {
      setError(e);
    }
  }, []);
  useEffect(() => {
    load();
  }, [load]);

  async function create(e) {
    e.preventDefault();
    const k = await run('create', () => api.post('/v1/api-keys', { name }));
    if (k) {
      setCreated(k);
      setCopied(false);
      setName('');
      load();
    }
  }

  async function remove(k) {
    const ok = await run(`del:${k.id}`, async () => {
      await api.del(`/v1/api-keys/${k.id}`);
      return true;
    });
    if (ok) setKeys((ks) => ks.filter((x) => x.id !== k.id));
  }

  async function copy() {
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  }

  return (
    <>
      <PageHeader title="API keys" subtitle="Keys let programs (E2B SDKs, the hearth CLI) use your team's sandboxes." />
      <Card title="Create a key">
        <form className="inline-form" onSubmit={create}>
          <input
            aria-label="Key name"
            name="key-name"
            placeholder="e.g. ci-runner"
            pattern="[a-z0-9][a-z0-9\-_.]{0,62}"
            title="lowercase letters, digits, - _ . (up to 63)"
            required
            value={name}
            onChange={(e) => setName(e.target.value)}
          />
          <Button type="submit" variant="primary" loading={busy === 'create'} data-testid="create-key">
            {busy === 'create' ? 'Creating…' : 'Create key'}
          </Button>
        </form>
        {created && (
          <div className="secret-box" data-testid="new-key">
            <div className="secret-head">
              <strong>{created.name}</strong>: copy this key now. It is shown only once.
            </div>
            <div className="secret-row">
              <code className="secret" data-testid="new-key-value">
                {created.key}
              </code>
              <Button className="btn-small" onClick={copy}>
                {copied ? 'Copied' : 'Copy'}
              </Button>
            </div>
            <div className="hint">
              Use it with an E2B SDK: <code>E2B_API_KEY={created.key.slice(0, 8)}…</code>
            </div>
            <Button className="btn-small btn-ghost" onClick={() => setCreated(null)}>
              Done
            </Button>
          </div>
        )}
      </Card>
      <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />
      {error && <ErrorBanner error={error} onRetry={load} />}
      {!keys && !error && <Loading label="Loading keys…" />}
      {keys && keys.length === 0 && <Empty title="No API keys" icon={<Icon name="key" size={28} />}>Create one above to use hearth from code.</Empty>}
      {keys && keys.length > 0 && (
        <Card className="card-flush">
          <table className="table responsive" data-testid="keys-table">
            <thead>
              <tr>
                <th>Name</th>
                <th>Key</th>
                <th>Created</th>
                <th>Last used</th>
                <th className="right" />
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.id} data-testid="key-row" data-name={k.name}>
                  <td data-label="Name" className="strong">
                    {k.name}
                  </td>
                  <td data-label="Key" className="mono muted">
                    {k.prefix}…
                  </td>
                  <td data-label="Created">{dateTime(k.created_at)}</td>
                  <td data-label="Last used">{k.last_used_at ? dateTime(k.last_used_at) : 'never'}</td>
                  <td data-label="" className="right">
                    <Button className="btn-small" variant="danger-ghost" loading={busy === `del:${k.id}`} onClick={() => remove(k)}>
                      Delete
                    </Button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Card>
      )}
    </>
  );
}
