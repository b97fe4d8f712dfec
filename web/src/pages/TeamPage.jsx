import { useCallback, useEffect, useState } from 'react';
import { useSession } from '../App.jsx';
import { api, currentTeam } from '../api.js';
import { dateTime } from '../format.js';
import { Button, Card, ErrorBanner, Loading, PageHeader, Spinner, useAction } from '../components/ui.jsx';

const ROLES = ['member', 'admin', 'owner'];

// What the caller may do to a member; the server decides for real
// (internal/service/teams.go), this only hides controls that would fail.
//   owners and admins manage members; only owners grant "owner" or touch
//   an owner; anyone may leave.
function permissions(myRole, member, myId) {
  const manager = myRole === 'owner' || myRole === 'admin';
  const touchable = manager && (member.role !== 'owner' || myRole === 'owner');
  return {
    changeRole: touchable,
    roles: myRole === 'owner' ? ROLES : ROLES.filter((r) => r !== 'owner'),
    remove: touchable || member.user_id === myId,
  };
}

export default function TeamPage() {
  const { me, refresh } = useSession();
  const team = currentTeam(me);
  const myRole = team?.role;
  const canManage = myRole === 'owner' || myRole === 'admin';
  const membersPath = team && `/v1/teams/${encodeURIComponent(team.id)}/members`;

  const [members, setMembers] = useState(null);
  const [error, setError] = useState(null);
  const [email, setEmail] = useState('');
  const [role, setRole] = useState('member');
  const [notice, setNotice] = useState('');
  const { busy, error: actionError, setError: setActionError, run } = useAction();

  const load = useCallback(async () => {
    if (!membersPath) return;
    setError(null);
    try {
      setMembers(await api.get(membersPath));
    } catch (e) {
      setError(e);
    }
  }, [membersPath]);
  useEffect(() => {
    load();
  }, [load]);

  async function add(e) {
    e.preventDefault();
    setNotice('');
    const m = await run('add', () => api.post(membersPath, { email, role }));
    if (m) {
      setMembers((ms) => [...(ms || []), m]);
      setNotice(`${m.email} joined as ${m.role}.`);
      setEmail('');
      setRole('member');
    }
  }

  async function changeRole(m, newRole) {
    setNotice('');
    const updated = await run(`role:${m.user_id}`, () =>
      api.patch(`${membersPath}/${encodeURIComponent(m.user_id)}`, { role: newRole }),
    );
    if (!updated) return;
    setMembers((ms) => ms.map((x) => (x.user_id === updated.user_id ? updated : x)));
    // My own role changed: what I may do changed too.
    if (m.user_id === me.user.id) refresh();
  }

  async function remove(m) {
    setNotice('');
    const self = m.user_id === me.user.id;
    const ok = await run(`del:${m.user_id}`, async () => {
      await api.del(`${membersPath}/${encodeURIComponent(m.user_id)}`);
      return true;
    });
    if (!ok) return;
    if (self) {
      // Left the team: the session's teams changed (the sidebar forgets it).
      refresh();
      return;
    }
    setMembers((ms) => ms.filter((x) => x.user_id !== m.user_id));
    setNotice(`${m.email} was removed.`);
  }

  return (
    <>
      <PageHeader title="Team" subtitle="Sandboxes, templates and API keys belong to a team; its members share them." />

      {!team && <ErrorBanner error="You are not a member of any team." />}
      {team && (
        <Card
          title={`Members of ${team.name}`}
          className="card-flush-body"
          actions={
            <span className="muted small">
              your role: <span className="tag">{myRole}</span>
            </span>
          }
        >
          {canManage && (
            <form className="inline-form" onSubmit={add} data-testid="add-member-form">
              <input
                type="email"
                name="member-email"
                aria-label="Email of the user to add"
                placeholder="email of an existing account"
                required
                value={email}
                onChange={(e) => setEmail(e.target.value)}
                disabled={busy === 'add'}
              />
              <select
                name="member-role"
                aria-label="Role"
                value={role}
                onChange={(e) => setRole(e.target.value)}
                disabled={busy === 'add'}
                className="role-select"
              >
                {permissions(myRole, { role: 'member' }, me.user.id).roles.map((r) => (
                  <option key={r} value={r}>
                    {r}
                  </option>
                ))}
              </select>
              <Button type="submit" variant="primary" loading={busy === 'add'} data-testid="add-member">
                {busy === 'add' ? 'Adding…' : 'Add member'}
              </Button>
            </form>
          )}
          {canManage && (
            <p className="hint">
              People sign up first; then add them by the email of their account. Nothing is emailed.
            </p>
          )}
          <ErrorBanner error={actionError} onDismiss={() => setActionError(null)} />
          {notice && (
            <div className="banner banner-ok" role="status" data-testid="members-notice">
              <span className="banner-msg">{notice}</span>
            </div>
          )}
          {error && <ErrorBanner error={error} onRetry={load} />}
          {!members && !error && <Loading label="Loading members…" />}
          {members && (
            <table className="table responsive" data-testid="members-table">
              <thead>
                <tr>
                  <th>Email</th>
                  <th>Role</th>
                  <th>Joined</th>
                  <th className="right" />
                </tr>
              </thead>
              <tbody>
                {members.map((m) => {
                  const p = permissions(myRole, m, me.user.id);
                  const self = m.user_id === me.user.id;
                  const rowBusy = busy === `role:${m.user_id}` || busy === `del:${m.user_id}`;
                  return (
                    <tr key={m.user_id} data-testid="member-row" data-email={m.email} data-role={m.role}>
                      <td data-label="Email" className="strong">
                        <span className="member-email">
                          {m.email} {self && <span className="tag">you</span>}
                        </span>
                      </td>
                      <td data-label="Role">
                        {p.changeRole ? (
                          <span className="role-cell">
                            {busy === `role:${m.user_id}` && <Spinner />}
                            <select
                              aria-label={`Role of ${m.email}`}
                              className="role-select"
                              value={m.role}
                              disabled={rowBusy}
                              onChange={(e) => changeRole(m, e.target.value)}
                            >
                              {(p.roles.includes(m.role) ? p.roles : [...p.roles, m.role]).map((r) => (
                                <option key={r} value={r}>
                                  {r}
                                </option>
                              ))}
                            </select>
                          </span>
                        ) : (
                          <span className="tag">{m.role}</span>
                        )}
                      </td>
                      <td data-label="Joined">{dateTime(m.joined_at)}</td>
                      <td data-label="" className="right">
                        {p.remove && (
                          <Button
                            className="btn-small"
                            variant="danger-ghost"
                            loading={busy === `del:${m.user_id}`}
                            disabled={rowBusy}
                            onClick={() => remove(m)}
                          >
                            {self ? 'Leave' : 'Remove'}
                          </Button>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          )}
        </Card>
      )}

      <Card title="You">
        <dl className="facts facts-inline">
          <div>
            <dt>Email</dt>
            <dd>{me.user.email}</dd>
          </div>
          <div>
            <dt>Member since</dt>
            <dd>{dateTime(me.user.created_at)}</dd>
          </div>
          <div>
            <dt>Platform role</dt>
            <dd>{me.user.is_admin ? 'admin' : 'user'}</dd>
          </div>
        </dl>
      </Card>
      <Card title="Your teams" className="card-flush-body">
        <table className="table responsive" data-testid="teams-table">
          <thead>
            <tr>
              <th>Team</th>
              <th>Team ID</th>
              <th>Your role</th>
            </tr>
          </thead>
          <tbody>
            {me.teams.map((t) => (
              <tr key={t.id}>
                <td data-label="Team" className="strong">
                  {t.name} {team && t.id === team.id && <span className="tag">current</span>}
                </td>
                <td data-label="Team ID" className="mono small">
                  {t.id}
                </td>
                <td data-label="Your role">
                  <span className="tag">{t.role}</span>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </Card>
      {me.teams.length > 1 && <p className="muted small">Switch teams with the selector in the sidebar.</p>}
    </>
  );
}
