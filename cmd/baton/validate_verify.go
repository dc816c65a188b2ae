package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/baton-fleet/baton/gitsync"
)

// withVerify adds --verify to the validate command: before DIR is validated,
// the commit checked out there (HEAD of the git repository holding DIR)
// must be signed by a trusted key, as an agent configured with repo.verify
// requires. A refused signature exits 1 after the validation has run too,
// so that CI shows every problem; keys that cannot be read, or no git
// repository, exit 2.
func withVerify(cmd *cobra.Command) *cobra.Command {
	var verify bool
	var opts gitsync.VerifyOptions
	fs := cmd.Flags()
	fs.BoolVar(&verify, "verify", false, "also check that the commit checked out in DIR is signed by a trusted key")
	fs.StringVar(&opts.SSHAllowedSigners, "ssh-allowed-signers", "", "with --verify: trust the SSH keys of this allowed_signers file")
	fs.StringVar(&opts.OpenPGPKeyring, "openpgp-keyring", "", "with --verify: trust the OpenPGP keys of this armored keyring")
	cmd.Long += `

With --verify, HEAD of the git repository holding DIR must first be signed by a
trusted key: an SSH key of --ssh-allowed-signers, listed for the committer's email,
or an OpenPGP key of --openpgp-keyring. Keep these files outside the repository
they check. A missing or bad signature is reported and exits 1.`
	validate := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !verify {
			if opts.Enabled() {
				return &exitError{code: 2, err: errors.New("--ssh-allowed-signers and --openpgp-keyring take effect with --verify")}
			}
			return validate(cmd, args)
		}
		if !opts.Enabled() {
			return &exitError{code: 2, err: errors.New("--verify needs --ssh-allowed-signers or --openpgp-keyring")}
		}
		dir := "."
		if len(args) == 1 {
			dir = args[0]
		}
		if info, err := os.Stat(dir); err != nil || !info.IsDir() {
			return validate(cmd, args) // it says so
		}
		head, signer, err := gitsync.VerifyDir(dir, opts)
		if err != nil && !errors.Is(err, gitsync.ErrUnsigned) && !errors.Is(err, gitsync.ErrBadSignature) {
			return &exitError{code: 2, err: err}
		}
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "baton:", err)
		} else {
			fmt.Fprintf(cmd.OutOrStdout(), "signed: HEAD %s by %s\n", head, signer)
		}
		if verr := validate(cmd, args); verr != nil || err == nil {
			return verr
		}
		return failed(errors.New(""))
	}
	return cmd
}
