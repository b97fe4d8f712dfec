package main

// `hearth team members|add|role|rm`: a team's members through
// /v1/teams/{team_id}/members, with the session of `hearth login` (email and
// password; API keys belong to a team, not a person, and are refused).

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

func newTeamCmd() *cobra.Command {
	var f apiFlags
	var team string
	cmd := &cobra.Command{
		Use:   "team",
		Short: "Manage your team's members (needs `hearth login` with email/password)",
		Long: `List, add, re-role and remove the members of a team. Owners and admins
manage members; only owners grant the owner role or touch an owner; a
team always keeps at least one owner. Members are added by the email of
an existing account (nothing is emailed).

--team picks the team by ID or name (default: the first team you own, as
the API does).`,
	}
	f.register(cmd)
	cmd.PersistentFlags().StringVar(&team, "team", "", "team ID or name (default: your own team)")

	// resolve returns the client and the team's ID.
	resolve := func(ctx context.Context) (*cli.Client, string, error) {
		c, err := f.client()
		if err != nil {
			return nil, "", err
		}
		me, err := c.Me(ctx)
		if err != nil {
			return nil, "", err
		}
		t, ok := cli.DefaultTeam(me)
		if team != "" {
			t, ok = cli.FindTeam(me, team)
			if !ok {
				return nil, "", cli.Usagef("`hearth team members` without --team lists your own team", "you are not a member of a team %q", team)
			}
		}
		if !ok {
			return nil, "", cli.Usagef("", "you are not a member of any team")
		}
		return c, t.ID, nil
	}
	// userID accepts a user ID or a member's email.
	userID := func(ctx context.Context, c *cli.Client, teamID, who string) (string, error) {
		if !strings.Contains(who, "@") {
			return who, nil
		}
		ms, err := c.ListTeamMembers(ctx, teamID)
		if err != nil {
			return "", err
		}
		for _, m := range ms {
			if strings.EqualFold(m.Email, who) {
				return m.UserID, nil
			}
		}
		return "", cli.Usagef("`hearth team members` lists them", "%s is not a member of this team", who)
	}
	printMember := func(cmd *cobra.Command, verb string, m apiwire.TeamMember) error {
		if f.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), m)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s) as %s\n", verb, m.Email, m.UserID, m.Role)
		return nil
	}

	members := &cobra.Command{
		Use:     "members",
		Aliases: []string{"ls", "list"},
		Short:   "List the team's members and their roles",
		Args:    exactArgs(0, "team members"),
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, teamID, err := resolve(cmd.Context())
			if err != nil {
				return err
			}
			ms, err := c.ListTeamMembers(cmd.Context(), teamID)
			if err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), ms)
			}
			now := time.Now()
			t := cli.NewTable(cmd.OutOrStdout(), "email", "role", "joined", "user id")
			for _, m := range ms {
				t.Row(m.Email, m.Role, cli.Age(now, m.JoinedAt)+" ago", m.UserID)
			}
			return t.Flush()
		}),
	}

	var role string
	add := &cobra.Command{
		Use:     "add EMAIL",
		Short:   "Add an existing user to the team",
		Example: "  hearth team add ada@example.com --role admin",
		Args:    exactArgs(1, "team add EMAIL"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, teamID, err := resolve(cmd.Context())
			if err != nil {
				return err
			}
			m, err := c.AddTeamMember(cmd.Context(), teamID, args[0], role)
			if err != nil {
				return err
			}
			return printMember(cmd, "Added", m)
		}),
	}
	add.Flags().StringVar(&role, "role", "member", "owner, admin or member")

	setRole := &cobra.Command{
		Use:     "role USER ROLE",
		Short:   "Change a member's role (USER is an email or a user ID)",
		Example: "  hearth team role ada@example.com owner",
		Args:    exactArgs(2, "team role USER ROLE"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, teamID, err := resolve(cmd.Context())
			if err != nil {
				return err
			}
			id, err := userID(cmd.Context(), c, teamID, args[0])
			if err != nil {
				return err
			}
			m, err := c.SetTeamMemberRole(cmd.Context(), teamID, id, args[1])
			if err != nil {
				return err
			}
			return printMember(cmd, "Now", m)
		}),
	}

	rm := &cobra.Command{
		Use:     "rm USER",
		Aliases: []string{"remove"},
		Short:   "Remove a member (USER is an email or a user ID; yourself: leave the team)",
		Args:    exactArgs(1, "team rm USER"),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, teamID, err := resolve(cmd.Context())
			if err != nil {
				return err
			}
			id, err := userID(cmd.Context(), c, teamID, args[0])
			if err != nil {
				return err
			}
			if err := c.RemoveTeamMember(cmd.Context(), teamID, id); err != nil {
				return err
			}
			if !f.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "Removed %s\n", args[0])
			}
			return nil
		}),
	}

	cmd.AddCommand(members, add, setRole, rm)
	return cmd
}
