import { useState } from 'react';

export function Spinner({ label }) {
  return (
    <span className="spinner-wrap" role="status">
      <span className="spinner" aria-hidden="true" />
      {label && <span>{label}</span>}
    </span>
  );
}

export function Loading({ label = 'Loading…' }) {
  return (
    <div className="state-box">
      <Spinner label={label} />
    </div>
  );
}

export function ErrorBanner({ error, onRetry, onDismiss }) {
  if (!error) return null;
  const msg = typeof error === 'string' ? error : error.message;
  return (
    <div className="banner banner-error" role="alert">
      <span className="banner-msg">{msg}</span>
      <span className="banner-actions">
        {onRetry && (
          <button type="button" className="btn btn-small" onClick={onRetry}>
            Retry
          </button>
        )}
        {onDismiss && (
          <button type="button" className="btn btn-small btn-ghost" onClick={onDismiss} aria-label="Dismiss">
            ✕
          </button>
        )}
      </span>
    </div>
  );
}

export function Empty({ title, children, icon = '○' }) {
  return (
    <div className="state-box empty">
      <div className="empty-icon" aria-hidden="true">
        {icon}
      </div>
      <div className="empty-title">{title}</div>
      {children && <div className="empty-body">{children}</div>}
    </div>
  );
}

export function Button({ loading, children, className = '', variant = 'default', ...rest }) {
  return (
    <button
      type="button"
      className={`btn btn-${variant} ${className}`}
      disabled={loading || rest.disabled}
      aria-busy={loading ? 'true' : undefined}
      {...rest}
    >
      {loading && <span className="spinner spinner-small" aria-hidden="true" />}
      {children}
    </button>
  );
}

// useAction runs an async action with loading and error state.
export function useAction() {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  async function run(key, fn) {
    setBusy(key);
    setError(null);
    try {
      return await fn();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(null);
    }
  }
  return { busy, error, setError, run };
}

const STATUS_TONE = {
  running: 'green',
  paused: 'blue',
  creating: 'amber',
  pausing: 'amber',
  resuming: 'amber',
  stopping: 'amber',
  stopped: 'gray',
  error: 'red',
};

export function StatusBadge({ status }) {
  return (
    <span className={`badge badge-${STATUS_TONE[status] || 'gray'}`} data-status={status}>
      <span className="badge-dot" aria-hidden="true" />
      {status}
    </span>
  );
}

export function PageHeader({ title, subtitle, children }) {
  return (
    <div className="page-header">
      <div>
        <h1>{title}</h1>
        {subtitle && <p className="subtitle">{subtitle}</p>}
      </div>
      {children && <div className="page-actions">{children}</div>}
    </div>
  );
}

export function Card({ title, children, actions, className = '' }) {
  return (
    <section className={`card ${className}`}>
      {(title || actions) && (
        <div className="card-head">
          {title && <h2>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </div>
      )}
      {children}
    </section>
  );
}
