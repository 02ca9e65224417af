package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/znodes"
)

// roleUse says, per role, who gets its credential and how they use it.
var roleUse = map[string]string{
	znodes.RoleAdmin:       "you: dcroll init again, ACL changes",
	znodes.RoleRelease:     "release engineers and the origin: dcroll --zk-auth release.cred push|rollback|pause|resume|blob publish|machine remove",
	znodes.RoleCoordinator: "coordinators: dcroll --zk-auth coordinator.cred coordinator",
	znodes.RoleAgent:       "every machine: agent config zk_auth: /etc/dcroll/agent.cred (mode 600)",
	znodes.RoleReader:      "dashboards of a --private tree: dcroll --zk-auth reader.cred dashboard",
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "secure a data center's tree: ZooKeeper ACLs per role, credentials for each role",
		Description: `Run it once per data center with the credential that becomes the tree's
administrator (the first identity to run it): a file whose first line is
user:password, mode 600, given with the global --zk-auth (or DCROLL_ZK_AUTH).

It writes a credential file per role into --credentials (release.cred,
coordinator.cred, agent.cred, reader.cred; kept when they exist), records the
roles' digests in /dc/acl, creates the tree if needed and gives every node
the ACL of the role table (docs/security.md): release engineers move HEAD,
agents write only the nodes of machines and their steps, coordinators their
records; everyone reads (only the roles, with --private). Running it again
is safe: it re-applies the table to every node (for example after nodes were
created by an older dcroll).

Then give each role its credential:
  release      release engineers and the origin (push, rollback, pause, resume,
               blob publish, machine remove|clear)
  coordinator  dcroll coordinator
  agent        every machine's agent (zk_auth in its config)
  reader       dashboards, when --private

Examples:
   umask 077; printf 'admin:%s\n' "$(head -c 24 /dev/urandom | base64)" > admin.cred
   dcroll --zk-auth admin.cred init --credentials /etc/dcroll/credentials
   dcroll --zk-auth admin.cred init --private --credentials ./creds`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "credentials", Value: "dcroll-credentials", Usage: "`DIR` for the roles' credential files (created mode 700)"},
			&cli.BoolFlag{Name: "private", Usage: "only the roles may read the tree (dashboards need the reader credential)"},
			jsonFlag(),
		},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, 0, "no arguments"); err != nil {
				return err
			}
			admin, err := adminCredential(c)
			if err != nil {
				return err
			}
			dir := c.String("credentials")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("init: %w", err)
			}
			t := &znodes.ACLTable{Roles: map[string]string{znodes.RoleAdmin: znodes.DigestID(admin)}, Private: c.Bool("private"), By: coordinator.WhoAmI()}
			files := map[string]string{}
			for _, role := range znodes.Roles[1:] {
				path := filepath.Join(dir, role+".cred")
				cred, err := roleCredential(path, role)
				if err != nil {
					return err
				}
				t.Roles[role], files[role] = znodes.DigestID(cred), path
			}
			return withConn(c, func(conn *znodes.Conn) error {
				n, err := conn.SecureTree(t)
				if err != nil {
					return fmt.Errorf("init: %w", err)
				}
				if c.Bool("json") {
					return printJSON(c.App.Writer, map[string]any{"root": conn.Paths().Root, "nodes": n, "private": t.Private, "credentials": files})
				}
				fmt.Fprintf(c.App.Writer, "secured %s: %d nodes have the ACLs of their roles (private: %v)\n\n", conn.Paths().Root, n, t.Private)
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ROLE\tCREDENTIAL\tGIVE IT TO")
				for _, role := range znodes.Roles {
					f := files[role]
					if role == znodes.RoleAdmin {
						f = dash(c.String("zk-auth"))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", role, f, roleUse[role])
				}
				return tw.Flush()
			})
		},
	}
}

// adminCredential is --zk-auth's (or DCROLL_ZK_AUTH's) credential.
func adminCredential(c *cli.Context) (string, error) {
	switch {
	case c.String("zk-auth") != "":
		return znodes.ReadCredentialFile(c.String("zk-auth"))
	case os.Getenv(znodes.EnvAuth) != "":
		return znodes.ParseCredential(os.Getenv(znodes.EnvAuth))
	}
	return "", usagef(c.Command.HelpName, "give the administrator's credential with --zk-auth FILE (first line user:password, mode 600) or %s", znodes.EnvAuth)
}

// roleCredential reads role's credential file, or makes it (mode 600).
func roleCredential(path, role string) (string, error) {
	cred, err := znodes.ReadCredentialFile(path)
	if err == nil {
		return cred, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("init: %w", err)
	}
	if cred, err = znodes.NewCredential(role); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("init: %w", err)
	}
	if _, err := fmt.Fprintln(f, cred); err != nil {
		f.Close()
		return "", fmt.Errorf("init: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("init: write %s: %w", path, err)
	}
	return cred, nil
}
