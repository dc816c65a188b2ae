// Package packagetest builds baton's .deb and .rpm with `make packages` and proves them: their contents, and their install, upgrade and removal on real systemd hosts.
package packagetest
