import { createContext, useCallback, useContext, useEffect, useState } from 'react';
import { Navigate, NavLink, Route, Routes, useLocation, useNavigate } from 'react-router-dom';
import { api, currentTeam, onUnauthorized, request, selectTeam, selectedTeam } from './api.js';
import { ErrorBanner, Loading } from './components/ui.jsx';
import Icon from './components/Icon.jsx';
import AuthPage from './pages/AuthPage.jsx';
import SandboxesPage from './pages/SandboxesPage.jsx';
import SandboxPage from './pages/SandboxPage.jsx';
import KeysPage from './pages/KeysPage.jsx';
import TemplatesPage from './pages/TemplatesPage.jsx';
import TeamPage from './pages/TeamPage.jsx';
import { AdminHostsPage, AdminTemplatesPage } from './pages/AdminPages.jsx';

const SessionContext = createContext(null);
export const useSession = () => useContext(SessionContext);

export default function App() {
  // me: undefined while loading, null when logged out, else GET /v1/me.
  const [me, setMe] = useState(undefined);
  const [loadError, setLoadError] = useState(null);

  const refresh = useCallback(async () => {
    setLoadError(null);
    try {
      const m = await api.get('/v1/me', { quiet401: true });
      // Forget a selected team the user is no longer in.
      const t = selectedTeam();
      if (t && !m.teams.some((x) => x.id === t)) selectTeam('');
      setMe(m);
    } catch (e) {
      if (e.status === 401) setMe(null);
      else setLoadError(e);
    }
  }, []);

  useEffect(() => {
    refresh();
    return onUnauthorized(() => setMe(null));
  }, [refresh]);

  const logout = useCallback(async () => {
    try {
      await request('DELETE', '/auth/session');
    } finally {
      selectTeam('');
      setMe(null);
    }
  }, []);

  if (loadError) {
    return (
      <div className="center-page">
        <ErrorBanner error={`Could not reach the hearth server: ${loadError.message}`} onRetry={refresh} />
      </div>
    );
  }
  if (me === undefined) {
    return (
      <div className="center-page">
        <Loading label="Loading hearth…" />
      </div>
    );
  }

  return (
    <SessionContext.Provider value={{ me, refresh, logout }}>
      <Routes>
        <Route path="/login" element={me ? <Navigate to="/sandboxes" replace /> : <AuthPage mode="login" onDone={refresh} />} />
        <Route path="/signup" element={me ? <Navigate to="/sandboxes" replace /> : <AuthPage mode="signup" onDone={refresh} />} />
        <Route path="*" element={me ? <Shell /> : <RedirectToLogin />} />
      </Routes>
    </SessionContext.Provider>
  );
}

function RedirectToLogin() {
  const loc = useLocation();
  const next = loc.pathname !== '/' ? `?next=${encodeURIComponent(loc.pathname + loc.search)}` : '';
  return <Navigate to={`/login${next}`} replace />;
}

const NAV = [
  { to: '/sandboxes', label: 'Sandboxes', icon: 'sandbox' },
  { to: '/templates', label: 'Templates', icon: 'layers' },
  { to: '/keys', label: 'API keys', icon: 'key' },
  { to: '/team', label: 'Team', icon: 'users' },
];
const ADMIN_NAV = [
  { to: '/admin/templates', label: 'All templates', icon: 'database' },
  { to: '/admin/hosts', label: 'Hosts', icon: 'server' },
];

function Shell() {
  const { me, logout } = useSession();
  const [menuOpen, setMenuOpen] = useState(false);
  const [loggingOut, setLoggingOut] = useState(false);
  const loc = useLocation();
  const navigate = useNavigate();
  useEffect(() => setMenuOpen(false), [loc.pathname]);

  const team = currentTeam(me);

  async function doLogout() {
    setLoggingOut(true);
    await logout();
    navigate('/login', { replace: true });
  }

  return (
    <div className={`shell ${menuOpen ? 'menu-open' : ''}`}>
      <header className="topbar">
        <button
          type="button"
          className="menu-toggle"
          aria-label="Menu"
          aria-expanded={menuOpen}
          onClick={() => setMenuOpen((o) => !o)}
        >
          <span />
          <span />
          <span />
        </button>
        <Brand />
      </header>
      <aside className="sidebar" aria-label="Navigation">
        <div className="sidebar-brand">
          <Brand />
        </div>
        {me.teams.length > 1 && (
          <label className="team-select">
            <span>Team</span>
            <select
              value={team?.id || ''}
              onChange={(e) => {
                selectTeam(e.target.value);
                // A full reload (outside the router): prefix the app's base.
                window.location.assign(`${import.meta.env.BASE_URL}sandboxes`);
              }}
            >
              {me.teams.map((t) => (
                <option key={t.id} value={t.id}>
                  {t.name}
                </option>
              ))}
            </select>
          </label>
        )}
        <nav>
          {NAV.map((n) => (
            <NavLink key={n.to} to={n.to} className="nav-link">
              <Icon name={n.icon} className="nav-icon" />
              {n.label}
            </NavLink>
          ))}
          {me.user.is_admin && (
            <>
              <div className="nav-section">Platform admin</div>
              {ADMIN_NAV.map((n) => (
                <NavLink key={n.to} to={n.to} className="nav-link">
                  <Icon name={n.icon} className="nav-icon" />
                  {n.label}
                </NavLink>
              ))}
            </>
          )}
        </nav>
        <div className="sidebar-foot">
          <div className="user-chip" title={me.user.email}>
            <span className="avatar" aria-hidden="true">
              {me.user.email.slice(0, 1).toUpperCase()}
            </span>
            <span className="user-email" data-testid="user-email">
              {me.user.email}
            </span>
          </div>
          <button type="button" className="btn btn-ghost btn-block" onClick={doLogout} disabled={loggingOut}>
            {loggingOut ? 'Logging out…' : 'Log out'}
          </button>
        </div>
      </aside>
      <div className="scrim" onClick={() => setMenuOpen(false)} aria-hidden="true" />
      <main className="content">
        <Routes>
          <Route path="/" element={<Navigate to="/sandboxes" replace />} />
          <Route path="/sandboxes" element={<SandboxesPage />} />
          <Route path="/sandboxes/:id" element={<SandboxPage />} />
          <Route path="/templates" element={<TemplatesPage />} />
          <Route path="/keys" element={<KeysPage />} />
          <Route path="/team" element={<TeamPage />} />
          <Route path="/admin/templates" element={<AdminTemplatesPage />} />
          <Route path="/admin/hosts" element={<AdminHostsPage />} />
          <Route path="*" element={<NotFound />} />
        </Routes>
      </main>
    </div>
  );
}

export function Brand() {
  return (
    <span className="brand">
      <img src={`${import.meta.env.BASE_URL}favicon.svg`} alt="" width="24" height="24" />
      <span>hearth</span>
    </span>
  );
}

function NotFound() {
  return (
    <div className="state-box empty">
      <div className="empty-title">Page not found</div>
      <NavLink to="/sandboxes">Go to sandboxes</NavLink>
    </div>
  );
}
