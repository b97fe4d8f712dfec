import { useCallback, useEffect, useRef, useState } from 'react';
import { api } from '../api.js';
import { dateTime } from '../format.js';
import { Button, Card, Empty, ErrorBanner, Loading, useAction } from '../components/ui.jsx';

const finished = (b) => b && !['waiting', 'building'].includes(b.status);

function BuildStatus({ status }) {
  return <span className={`tag tag-build-${status}`}>{status}</span>;
}

// BuildLog shows one build's log and follows it while the build runs
// (polling the log from the last line seen; stops once the build ended
// and nothing more came).
function BuildLog({ template, build, onFinished }) {
  const [lines, setLines] = useState([]);
  const [error, setError] = useState(null);
  const after = useRef(0);
  const box = useRef(null);
  useEffect(() => {
    let stop = false;
    let timer;
    after.current = 0;
    setLines([]);
    const base = `/v1/templates/${encodeURIComponent(template)}/builds/${encodeURIComponent(build.id)}`;
    async function poll() {
      try {
        const [b, logs] = await Promise.all([api.get(base), api.get(`${base}/logs?after=${after.current}`)]);
        if (stop) return;
        if (logs.length > 0) {
          after.current = logs[logs.length - 1].seq;
          setLines((l) => [...l, ...logs]);
        }
        if (finished(b) && logs.length === 0) {
          onFinished(b);
          return;
        }
      } catch (e) {
        if (!stop) setError(e);
        return;
      }
      timer = setTimeout(poll, 1000);
    }
    poll();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [template, build.id, onFinished]);
  useEffect(() => {
    if (box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines]);
  return (
    <>
      <ErrorBanner error={error} />
      <pre className="build-log" ref={box} data-testid="build-log">
        {lines.map((l) => (
          <div key={l.seq} className={l.level === 'error' ? 'log-error' : ''}>
            <span className="muted">{new Date(l.time).toLocaleTimeString()} </span>
            {l.step ? <span className="muted">[{l.step}] </span> : null}
            {l.message}
          </div>
        ))}
      </pre>
    </>
  );
}

// BuildsCard lists the team's built templates with their builds' status;
// a selected build's log is shown live.
export default function BuildsCard({ templates, onChange }) {
  const [selected, setSelected] = useState(null); // template name
  const [builds, setBuilds] = useState(null);
  const [build, setBuild] = useState(null);
  const [error, setError] = useState(null);
  const { busy, error: actionError, setError: setActionError, run } = useAction();

  const load = useCallback(async (name) => {
    setError(null);
    try {
      const bs = await api.get(`/v1/templates/${encodeURIComponent(name)}/builds`);
      setBuilds(bs);
      setBuild((cur) => bs.find((b) => b.id === cur?.id) ?? bs[0] ?? null);
    } catch (e) {
      setError(e);
    }
  }, []);
  useEffect(() => {
    if (selected) load(selected);
  }, [selected, load]);
  const onFinished = useCallback(() => {
    if (selected) load(selected);
    onChange?.();
  }, [selected, load, onChange]);

  async function cancel(b) {
    const ok = await run(`cancel:${b.id}`, () => api.post(`/v1/templates/${encodeURIComponent(selected)}/builds/${b.id}/cancel`));
    if (ok) load(selected);
  }
  async function remove(t) {
    const ok = await run(`rm:${t.name}`, async () => {
      await api.del(`/v1/templates/${encodeURIComponent(t.name)}`);
      return true;
    });
    if (ok) {
      if (selected === t.name) setSelected(null);
      onChange?.();
    }
  }

  return (
    <Card title="Built templates">
      <p className="muted small">
        Build with <code>hearth template build --name NAME .</code> or the E2B SDK&apos;s <code>Template.build</code>.
      </p>
      <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />
      {templates.length === 0 && <Empty title="No built templates yet" />}
      {templates.length > 0 && (
        <table className="table responsive" data-testid="built-table">
          <thead>
            <tr>
              <th>Name</th>
              <th>Status</th>
              <th>Kind</th>
              <th>Start command</th>
              <th className="right" />
            </tr>
          </thead>
          <tbody>
            {templates.map((t) => (
              <tr key={t.id} data-testid="built-row" data-name={t.name}>
                <td data-label="Name" className="strong">
                  {t.name}
                </td>
                <td data-label="Status">
                  <BuildStatus status={t.build_status || 'ready'} />
                </td>
                <td data-label="Kind">{t.kind}</td>
                <td data-label="Start command" className="mono small">
                  {t.start_cmd || '—'}
                </td>
                <td data-label="" className="right nowrap">
                  <Button className="btn-small" onClick={() => setSelected(t.name)}>
                    Builds
                  </Button>{' '}
                  {!t.platform && (
                    <Button className="btn-small" variant="danger-ghost" loading={busy === `rm:${t.name}`} onClick={() => remove(t)}>
                      Delete
                    </Button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {selected && (
        <div className="builds" data-testid="builds">
          <h3>Builds of {selected}</h3>
          {error && <ErrorBanner error={error} onRetry={() => load(selected)} />}
          {!builds && !error && <Loading label="Loading builds…" />}
          {builds && (
            <table className="table responsive">
              <tbody>
                {builds.map((b) => (
                  <tr key={b.id} className={build?.id === b.id ? 'selected' : ''} data-testid="build-row">
                    <td className="mono small">
                      <a href="#log" onClick={(e) => (e.preventDefault(), setBuild(b))}>
                        {b.id}
                      </a>
                    </td>
                    <td>
                      <BuildStatus status={b.status} />
                    </td>
                    <td className="nowrap">{dateTime(b.created_at)}</td>
                    <td className="small">{b.error}</td>
                    <td className="right">
                      {!finished(b) && (
                        <Button className="btn-small" variant="danger-ghost" loading={busy === `cancel:${b.id}`} onClick={() => cancel(b)}>
                          Cancel
                        </Button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {build && <BuildLog template={selected} build={build} onFinished={onFinished} />}
        </div>
      )}
    </Card>
  );
}
