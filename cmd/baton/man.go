package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCmd generates the man pages, one per command, from the command tree itself.
// It is hidden: the packages run it at build time (make packages), users read the
// result with `man baton`.
func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write baton's man pages (section 1) into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if info, err := os.Stat(dir); err != nil || !info.IsDir() {
				return &exitError{code: 2, err: fmt.Errorf("%s is not a directory", dir)}
			}
			root := cmd.Root()
			// The pages of a build are the same whenever they are generated: no
			// "auto generated on <today>" line, and the build date in the header.
			disableAutoGenTag(root)
			header := &doc.GenManHeader{
				Title:   "BATON",
				Section: "1",
				Source:  "baton " + version,
				Manual:  "baton manual",
				Date:    buildDate(),
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return failed(fmt.Errorf("write man pages: %w", err))
			}
			return nil
		},
	}
}

func disableAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		disableAutoGenTag(sub)
	}
}

// buildDate is the date stamped into the binary (RFC 3339, or just the day), nil when
// it is not a date: then the pages take $SOURCE_DATE_EPOCH, or today.
func buildDate() *time.Time {
	for _, layout := range []string{time.RFC3339, time.DateOnly} {
		if t, err := time.Parse(layout, date); err == nil {
			return &t
		}
	}
	return nil
}
