package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// TestDockerComposeNamesRealCommands parses docker-compose.yml and checks
// that every dcroll command line in it names a real command and real flags.
func TestDockerComposeNamesRealCommands(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Command []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	app := NewApp(io.Discard, io.Discard)
	checked := 0
	for name, svc := range compose.Services {
		if len(svc.Command) == 0 || svc.Command[0] != "dcroll" {
			continue
		}
		checked++
		args := svc.Command[1:]
		flags := app.Flags
		var cmd *cli.Command
		for i := 0; i < len(args); i++ {
			a := args[i]
			if strings.HasPrefix(a, "-") {
				fname := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
				f := findFlag(flags, fname)
				if f == nil {
					t.Errorf("service %s: %q is not a flag of %s", name, a, cmdName(cmd))
					continue
				}
				if _, isBool := f.(*cli.BoolFlag); !isBool && !strings.Contains(a, "=") {
					i++ // skip the value
				}
				continue
			}
			var sub []*cli.Command
			if cmd == nil {
				sub = app.Commands
			} else {
				sub = cmd.Subcommands
			}
			next := findCommand(sub, a)
			if next == nil {
				if cmd == nil {
					t.Errorf("service %s: %q is not a dcroll command", name, a)
				}
				break
			}
			cmd = next
			flags = cmd.Flags
		}
		if cmd == nil {
			t.Errorf("service %s: no dcroll command in %v", name, svc.Command)
		}
	}
	if checked < 3 {
		t.Fatalf("only %d dcroll services in docker-compose.yml", checked)
	}
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		for _, n := range c.Names() {
			if n == name {
				return c
			}
		}
	}
	return nil
}

func cmdName(c *cli.Command) string {
	if c == nil {
		return "dcroll"
	}
	return c.Name
}
