package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

const bashCompletion = `# dcroll bash completion: source <(dcroll completion bash)
_dcroll_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  local opts
  if [[ "$cur" == "-"* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _dcroll_complete dcroll
`

const zshCompletion = `#compdef dcroll
# dcroll zsh completion: source <(dcroll completion zsh)
_dcroll() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi
  _describe 'values' opts
}
compdef _dcroll dcroll
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: `Load it in the current shell:
   source <(dcroll completion bash)
or install it:
   dcroll completion bash > /etc/bash_completion.d/dcroll`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash", "":
				fmt.Fprint(c.App.Writer, bashCompletion)
			case "zsh":
				fmt.Fprint(c.App.Writer, zshCompletion)
			default:
				return usageError{msg: fmt.Sprintf("completion: unknown shell %q: use bash or zsh", c.Args().First())}
			}
			return nil
		},
	}
}
