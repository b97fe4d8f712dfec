import { useSession } from '../App.jsx';
import { selectedTeam } from '../api.js';
import { dateTime } from '../format.js';
import { Card, PageHeader } from '../components/ui.jsx';

export default function TeamPage() {
  const { me } = useSession();
  const current = me.teams.find((t) => t.id === selectedTeam()) || me.teams[0];
  return (
    <>
      <PageHeader title="Team" subtitle="Sandboxes, templates and API keys belong to a team." />
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
                  {t.name} {current && t.id === current.id && <span className="tag">current</span>}
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
      <p className="muted small">
        Listing and inviting other members needs a members API, which this server does not offer yet.
      </p>
    </>
  );
}
