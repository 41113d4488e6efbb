package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/thawhq/thaw/auth"
)

// watchUsers keeps p.Users in step with the users file it was loaded from
// (auth.UsersWatcher): the file is read every second, and at once on
// SIGHUP, until ctx is done. A process without a users file (thaw dev
// writes its own from flags) has nothing to watch and returns at once.
func (p *process) watchUsers(ctx context.Context) error {
	if p.usersFile == "" {
		return nil
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	w, err := auth.NewUsersWatcher(auth.UsersWatcherConfig{
		Path: p.usersFile, Users: p.Users, Reload: hup, Logger: p.Log,
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}
