module github.com/berth-project/berth

go 1.26.0

toolchain go1.26.8

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/coreos/go-systemd/v22 v22.7.0
)

require (
	github.com/godbus/dbus/v5 v5.2.4
	github.com/klauspost/compress v1.20.4
	github.com/varlink/go v0.4.1-0.20261015173642-c935be0c53f7
	golang.org/x/sys v0.50.0
	golang.org/x/tools v0.52.0
)
