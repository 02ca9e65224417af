package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"dcroll/coordinator"
	"dcroll/znodes"
)

// Shell completion never runs a command. The scripts call
//
//	dcroll __complete WORD... CURRENT
//
// with the words typed after "dcroll" up to the word under the cursor
// (CURRENT, "" for a new word). App.RunContext answers before urfave/cli
// parses anything: one candidate per line, and the line fileMarker when the
// shell should offer file names too. The legacy urfave/cli protocol (any
// argument --generate-bash-completion, as older scripts send) is answered
// the same way, so a stale script cannot run a command either.
const (
	completeCommand = "__complete"
	legacyComplete  = "--generate-bash-completion"
	fileMarker      = ":file"
)

// completionZKTimeout bounds the ZooKeeper reads of completion (spec, blob
// and machine names): a shell must not hang on an unreachable server.
const completionZKTimeout = time.Second

// completionWords reports whether args (with the program name) ask for
// completion, and the words to complete, the last one being the current.
func completionWords(args []string) ([]string, bool) {
	if len(args) > 1 && args[1] == completeCommand {
		words := slices.Clone(args[2:])
		if len(words) == 0 {
			words = []string{""}
		}
		return words, true
	}
	if !slices.Contains(args, legacyComplete) {
		return nil, false
	}
	var words []string
	for _, a := range args[1:] {
		if a != legacyComplete {
			words = append(words, a)
		}
	}
	// urfave's scripts append the flag after a partial "-..." word, or after
	// the completed words when the current word is new.
	if len(words) == 0 || !strings.HasPrefix(words[len(words)-1], "-") {
		words = append(words, "")
	}
	return words, true
}

// complete writes the candidates for the last of words.
func (a *App) complete(ctx context.Context, w io.Writer, words []string) error {
	cands, files := a.candidates(ctx, words)
	for _, c := range cands {
		fmt.Fprintln(w, c)
	}
	if files {
		fmt.Fprintln(w, fileMarker)
	}
	return nil
}

// candidates returns what may replace the last of words, filtered by what
// it starts with, and whether file names fit there.
func (a *App) candidates(ctx context.Context, words []string) (cands []string, files bool) {
	cur, before := words[len(words)-1], words[:len(words)-1]
	var (
		path     []*cli.Command
		nargs    int
		dashdash bool
		help     bool
		valueOf  cli.Flag              // the flag whose value cur is
		globals  = map[string]string{} // global flag values typed
	)
	leaf := func() *cli.Command {
		if len(path) == 0 {
			return nil
		}
		return path[len(path)-1]
	}
	for _, tok := range before {
		if valueOf != nil {
			if g := lookupFlag(a.Flags, valueOf.Names()[0]); g == valueOf {
				globals[valueOf.Names()[0]] = tok
			}
			valueOf = nil
			continue
		}
		if !dashdash && tok == "--" {
			dashdash = true
			continue
		}
		if !dashdash && isFlag(tok) {
			name, value, hasValue := splitFlag(tok)
			f, global := a.flagOf(leaf(), name)
			if f == nil {
				f = descendantFlag(a.subcommands(leaf()), name)
			}
			if f != nil && takesValue(f) && !hasValue {
				valueOf = f
			}
			if global && hasValue {
				globals[name] = value
			}
			continue
		}
		if subs := a.subcommands(leaf()); len(subs) > 0 && nargs == 0 {
			if tok == "help" && !dashdash {
				help = true
				continue
			}
			if c := lookupCommand(subs, tok); c != nil {
				path = append(path, c)
				continue
			}
		}
		nargs++
	}
	prefix, typed := "", cur
	switch {
	case valueOf != nil: // dcroll --log-level <TAB>: a value, never a flag
		cands, files = flagValueCandidates(valueOf)
	case !dashdash && strings.HasPrefix(cur, "-") && strings.Contains(cur, "="): // --log-level=d<TAB>
		name, value, _ := splitFlag(cur)
		if f, _ := a.flagOf(leaf(), name); f != nil {
			cands, files = flagValueCandidates(f)
			prefix, typed = cur[:len(cur)-len(value)], value
		}
	case !dashdash && strings.HasPrefix(cur, "-"):
		if l := leaf(); l != nil {
			cands = flagNames(l.Flags)
		}
		cands = append(cands, flagNames(a.Flags)...)
		cands = append(cands, "--help")
	default:
		if subs := a.subcommands(leaf()); len(subs) > 0 && nargs == 0 {
			cands = visibleNames(subs)
		} else if !help {
			cands, files = a.argCandidates(ctx, path, nargs, globals)
		}
	}
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, typed) && !slices.Contains(out, prefix+c) {
			out = append(out, prefix+c)
		}
	}
	return out, files
}

// fileFlags take a file or directory name.
var fileFlags = []string{"config", "spec", "output", "store", "data-dir"}

func flagValueCandidates(f cli.Flag) ([]string, bool) {
	name := f.Names()[0]
	if v, ok := flagValues[name]; ok {
		return v, false
	}
	return nil, slices.Contains(fileFlags, name)
}

// argCandidates completes the nargs-th argument of the command path.
func (a *App) argCandidates(ctx context.Context, path []*cli.Command, nargs int, globals map[string]string) ([]string, bool) {
	var names []string
	for _, c := range path {
		names = append(names, c.Name)
	}
	switch strings.Join(names, " ") {
	case "push", "plan":
		return nil, nargs == 0
	case "spec validate", "blob publish":
		return nil, true
	case "completion":
		if nargs == 0 {
			return shells, false
		}
	case "rollback", "spec show":
		if nargs == 0 {
			return a.zkNames(ctx, globals, func(c *znodes.Conn) ([]string, error) {
				ids, _, err := c.ZK().Children(c.Paths().Specs())
				return ids, err
			}), false
		}
	case "blob torrent", "blob fetch":
		if nargs == 0 || names[1] == "fetch" {
			return a.zkNames(ctx, globals, func(c *znodes.Conn) ([]string, error) {
				hexes, _, err := c.ZK().Children(c.Paths().Blobs()) // a bare hex digest is a blob id too (no ':' for bash to split)
				return hexes, err
			}), false
		}
	case "promote":
		if nargs == 0 {
			return a.zkNames(ctx, globals, func(c *znodes.Conn) ([]string, error) {
				q, err := coordinator.ReadQueue(c) // services of unfinished entries
				var svcs []string
				for _, e := range q {
					if e.State != znodes.DeployDone {
						svcs = append(svcs, e.Service)
					}
				}
				return svcs, err
			}), false
		}
	case "machine remove", "machine clear":
		if nargs == 0 {
			return a.zkNames(ctx, globals, func(c *znodes.Conn) ([]string, error) {
				svcs, _, err := c.ZK().Children(c.Paths().MembersRoot())
				var machines []string
				for _, s := range svcs {
					ms, _, _ := c.ZK().Children(c.Paths().Members(s))
					machines = append(machines, ms...)
				}
				return machines, err
			}), false
		}
	}
	return nil, false
}

// zkNames reads names from ZooKeeper for completion: read-only, within
// completionZKTimeout, nothing when it is unreachable.
func (a *App) zkNames(ctx context.Context, globals map[string]string, list func(*znodes.Conn) ([]string, error)) []string {
	setting := func(name string) string {
		if v, ok := globals[name]; ok {
			return v
		}
		f := lookupFlag(a.Flags, name).(*cli.StringFlag)
		for _, e := range f.EnvVars {
			if v, ok := os.LookupEnv(e); ok {
				return v
			}
		}
		return f.Value
	}
	servers := setting("zk")
	if probeZK(servers, completionZKTimeout) != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*completionZKTimeout)
	defer cancel()
	o := znodes.Options{
		Servers:        servers,
		Root:           setting("root"),
		ConnectTimeout: completionZKTimeout,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	sec := znodes.Security{AuthFile: setting("zk-auth"), Auth: os.Getenv(znodes.EnvAuth),
		TLSCA: setting("zk-tls-ca"), TLSCert: setting("zk-tls-cert"), TLSKey: setting("zk-tls-key")}
	if sec.Apply(&o) != nil {
		return nil
	}
	conn, err := znodes.Dial(ctx, o)
	if err != nil {
		return nil
	}
	defer conn.Close()
	names, err := list(conn)
	if err != nil {
		return nil
	}
	sort.Strings(names)
	return names
}

var shells = []string{"bash", "zsh", "fish"}

const bashCompletion = `# dcroll bash completion: source <(dcroll completion bash)
# It asks "dcroll __complete WORDS..." for candidates, which never runs a command.
_dcroll_complete() {
  local cur words cword
  if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
    _get_comp_words_by_ref -n =: cur words cword
  else
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  local IFS=$'\n'
  local -a out
  out=($("${words[0]}" __complete "${words[@]:1:cword-1}" "$cur" 2>/dev/null))
  COMPREPLY=()
  local c
  for c in "${out[@]}"; do
    if [[ "$c" == ":file" ]]; then
      compopt -o filenames 2>/dev/null
      COMPREPLY+=($(compgen -f -- "$cur"))
    else
      COMPREPLY+=("$c")
    fi
  done
  # bash replaces only the part after the last = or : of the word.
  if [[ "$cur" == *[=:]* ]]; then
    local pre="${cur%"${cur##*[=:]}"}"
    COMPREPLY=("${COMPREPLY[@]#"$pre"}")
  fi
}
complete -o bashdefault -o default -F _dcroll_complete dcroll
`

const zshCompletion = `#compdef dcroll
# dcroll zsh completion: source <(dcroll completion zsh)
# It asks "dcroll __complete WORDS..." for candidates, which never runs a command.
_dcroll() {
  local -a out
  out=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
  out=(${out:#})
  if (( ${out[(Ie):file]} )); then
    out=(${out:#:file})
    _files
  fi
  (( ${#out} )) && compadd -- "${out[@]}"
  return 0
}
compdef _dcroll dcroll
`

const fishCompletion = `# dcroll fish completion: dcroll completion fish | source
# It asks "dcroll __complete WORDS..." for candidates, which never runs a command.
function __dcroll_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    for c in (command $tokens[1] __complete $tokens[2..-1] "$cur" 2>/dev/null)
        if test "$c" = ":file"
            __fish_complete_path "$cur"
        else
            echo $c
        end
    end
end
complete -c dcroll -f -a '(__dcroll_complete)'
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Completes commands, flags, the values of --log-level and --log-format, spec
files, and the spec ids, blob ids and machines stored in ZooKeeper (read with
a one-second timeout; nothing is offered when it is unreachable). Completing
never runs a command.

Load it in the current shell:
   source <(dcroll completion bash)
   source <(dcroll completion zsh)
   dcroll completion fish | source
or install it:
   dcroll completion bash > /etc/bash_completion.d/dcroll`,
		Action: func(c *cli.Context) error {
			if err := needArgs(c, 0, 1, "one shell: bash, zsh or fish"); err != nil {
				return err
			}
			switch c.Args().First() {
			case "bash", "":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			case "fish":
				fmt.Fprint(c.App.Writer, fishCompletion)
			default:
				return usagef(c.Command.HelpName, "unknown shell %q: want %s", c.Args().First(), strings.Join(shells, "|"))
			}
			return nil
		},
	}
}
