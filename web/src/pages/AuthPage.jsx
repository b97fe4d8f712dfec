import { useState } from 'react';
import { Link, useNavigate, useSearchParams } from 'react-router-dom';
import { request } from '../api.js';
import { Brand } from '../App.jsx';
import { Button, ErrorBanner } from '../components/ui.jsx';

export default function AuthPage({ mode, onDone }) {
  const signup = mode === 'signup';
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const navigate = useNavigate();
  const [params] = useSearchParams();

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await request('POST', signup ? '/auth/signup' : '/auth/session', { email, password }, { quiet401: true });
      await onDone();
      const next = params.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/sandboxes', { replace: true });
    } catch (err) {
      setError(err.status === 401 ? 'Wrong email or password.' : err.message);
      setBusy(false);
    }
  }

  return (
    <div className="auth-page">
      <div className="auth-card">
        <div className="auth-brand">
          <Brand />
        </div>
        <h1>{signup ? 'Create your account' : 'Log in'}</h1>
        <p className="subtitle">
          {signup ? 'Sandboxes on your own boxes, in a minute.' : 'Welcome back. Log in to manage your sandboxes.'}
        </p>
        <form onSubmit={submit} className="form" noValidate={false}>
          <label className="field">
            <span>Email</span>
            <input
              type="email"
              name="email"
              autoComplete="email"
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              autoFocus
            />
          </label>
          <label className="field">
            <span>Password</span>
            <input
              type="password"
              name="password"
              autoComplete={signup ? 'new-password' : 'current-password'}
              required
              minLength={signup ? 8 : undefined}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
            {signup && <small className="hint">At least 8 characters.</small>}
          </label>
          <ErrorBanner error={error} />
          <Button type="submit" variant="primary" className="btn-block" loading={busy}>
            {busy ? (signup ? 'Creating account…' : 'Logging in…') : signup ? 'Sign up' : 'Log in'}
          </Button>
        </form>
        <p className="auth-switch">
          {signup ? (
            <>
              Already have an account? <Link to="/login">Log in</Link>
            </>
          ) : (
            <>
              New to hearth? <Link to="/signup">Create an account</Link>
            </>
          )}
        </p>
      </div>
    </div>
  );
}
