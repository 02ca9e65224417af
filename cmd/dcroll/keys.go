package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"dcroll/internal/sign"
)

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:      "keygen",
		Usage:     "make an ed25519 key pair to sign HEAD (push --sign) and for agents to trust (agent --trust)",
		ArgsUsage: "KEY",
		Description: `Writes the private key to KEY (PEM, mode 600) and the public key to KEY.pub.
Existing files are never overwritten. Keep KEY with release engineers (or in
the release pipeline's secret store); install KEY.pub on every machine and
start agents with --trust KEY.pub. To rotate: make a new key, add its .pub to
the agents' --trust list, push with the new key, then remove the old .pub.

Examples:
   dcroll keygen ~/.dcroll/release.key
   dcroll push --sign ~/.dcroll/release.key nightly.yaml
   dcroll agent --trust /etc/dcroll/release.key.pub --service store --data-dir /var/lib/dcroll`,
		Flags: []cli.Flag{jsonFlag()},
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 1, 1, "one KEY path"); err != nil {
				return err
			}
			path := c.Args().First()
			id, err := sign.GenerateKey(path)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(c.App.Writer, map[string]string{"key_id": id, "private": path, "public": path + ".pub"})
			}
			fmt.Fprintf(c.App.Writer, "key %s: private %s (keep it secret), public %s (agents: --trust %s)\n", id, path, path+".pub", path+".pub")
			return nil
		},
	}
}
