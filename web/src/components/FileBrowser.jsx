import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, api, fileURL, request, teamQuery } from '../api.js';
import { bytes, dateTime } from '../format.js';
import { Button, Empty, ErrorBanner, Loading, useAction } from './ui.jsx';
import Icon from './Icon.jsx';

function join(dir, name) {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

function parent(dir) {
  if (dir === '/') return '/';
  const p = dir.slice(0, dir.lastIndexOf('/'));
  return p || '/';
}

// FileBrowser lists a sandbox directory (the dashboard's /ui/ listing, from
// envd) and uploads/downloads through the API's /v1/sandboxes/{id}/files.
export default function FileBrowser({ sandboxId, initialPath = '/home/user' }) {
  const [path, setPath] = useState(initialPath);
  const [pathInput, setPathInput] = useState(initialPath);
  const [listing, setListing] = useState(null);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(false);
  const fileInput = useRef(null);
  const { busy, error: actionError, setError: setActionError, run } = useAction();
  const [notice, setNotice] = useState(null);

  const load = useCallback(
    async (p) => {
      setLoading(true);
      setError(null);
      try {
        const res = await api.get(`/ui/sandboxes/${encodeURIComponent(sandboxId)}/dir?path=${encodeURIComponent(p)}${teamQuery()}`);
        setListing(res);
        setPath(res.path);
        setPathInput(res.path);
      } catch (e) {
        // A fresh sandbox may lack the default directory: fall back to /.
        if (e.status === 404 && p === initialPath) {
          load('/');
          return;
        }
        setError(e);
      } finally {
        setLoading(false);
      }
    },
    [sandboxId, initialPath],
  );

  useEffect(() => {
    load(initialPath);
  }, [load, initialPath]);

  async function upload(e) {
    const files = Array.from(e.target.files || []);
    e.target.value = '';
    if (files.length === 0) return;
    setNotice(null);
    const ok = await run('upload', async () => {
      for (const f of files) {
        await request('PUT', fileURL(sandboxId, join(path, f.name)), f);
      }
      return true;
    });
    if (ok) {
      setNotice(`Uploaded ${files.map((f) => f.name).join(', ')} to ${path}`);
      load(path);
    }
  }

  async function download(entry) {
    setNotice(null);
    await run(`dl:${entry.path}`, async () => {
      const res = await request('GET', fileURL(sandboxId, entry.path), undefined, { raw: true });
      if (!res.ok) throw new ApiError(res.status, res.statusText);
      const blob = await res.blob();
      const href = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = href;
      a.download = entry.name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 10000);
    });
  }

  return (
    <div className="files" data-testid="file-browser">
      <div className="files-toolbar">
        <Button className="btn-small" disabled={path === '/' || loading} onClick={() => load(parent(path))} aria-label="Up one directory">
          <Icon name="up" size={14} /> Up
        </Button>
        <form
          className="path-form"
          onSubmit={(e) => {
            e.preventDefault();
            load(pathInput.trim() || '/');
          }}
        >
          <input aria-label="Path" className="mono" value={pathInput} onChange={(e) => setPathInput(e.target.value)} />
          <Button type="submit" className="btn-small" loading={loading}>
            Go
          </Button>
        </form>
        <Button className="btn-small" onClick={() => load(path)} disabled={loading}>
          Refresh
        </Button>
        <Button className="btn-small" variant="primary" loading={busy === 'upload'} onClick={() => fileInput.current.click()}>
          {busy !== 'upload' && <Icon name="upload" size={14} />}
          {busy === 'upload' ? 'Uploading…' : 'Upload'}
        </Button>
        <input ref={fileInput} type="file" multiple hidden onChange={upload} data-testid="upload-input" />
      </div>
      <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />
      {notice && (
        <div className="banner banner-ok" role="status" data-testid="files-notice">
          {notice}
        </div>
      )}
      {error && <ErrorBanner error={error} onRetry={() => load(path)} />}
      {!listing && !error && <Loading label="Listing files…" />}
      {listing && listing.entries.length === 0 && <Empty title="Empty directory" icon={<Icon name="folder" size={26} />} />}
      {listing && listing.entries.length > 0 && (
        <div className="table-scroll">
          <table className="table files-table">
            <thead>
              <tr>
                <th>Name</th>
                <th className="right">Size</th>
                <th className="hide-narrow">Modified</th>
                <th className="right" />
              </tr>
            </thead>
            <tbody>
              {listing.entries.map((e) => (
                <tr key={e.path} data-testid="file-row" data-name={e.name}>
                  <td className="file-name">
                    {e.type === 'dir' ? (
                      <button type="button" className="link-btn" onClick={() => load(e.path)}>
                        <Icon name="folder" className="file-icon icon-folder" />
                        {e.name}/
                      </button>
                    ) : (
                      <span>
                        <Icon name={e.type === 'symlink' ? 'link' : 'file'} className="file-icon" />
                        {e.name}
                      </span>
                    )}
                  </td>
                  <td className="right nowrap muted">{e.type === 'dir' ? '' : bytes(e.size)}</td>
                  <td className="hide-narrow nowrap muted">{dateTime(e.modified)}</td>
                  <td className="right">
                    {e.type !== 'dir' && (
                      <Button className="btn-small btn-ghost" loading={busy === `dl:${e.path}`} onClick={() => download(e)}>
                        Download
                      </Button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
