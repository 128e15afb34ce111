package load

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
	"github.com/troupehq/troupe/outbox"
)

// Ledgers are the databases the books are read from. The generator opens
// them by URL, as the services do, so the check is the same whether the
// services run in one process (SQLite files in one folder) or in many
// (each with its own SQLite file or PostgreSQL database). Safe for
// concurrent use.
type Ledgers struct {
	order, payment, inventory *outbox.DB
}

// LedgerURLs are the database URLs of the order, payment and inventory
// services ("sqlite:PATH" or "postgres://...").
type LedgerURLs struct {
	Order, Payment, Inventory string
}

// DataDirURLs are the URLs of the all-in-one binary's SQLite files in dir.
func DataDirURLs(dir string) LedgerURLs {
	return LedgerURLs{
		Order:     "sqlite:" + filepath.Join(dir, shop.OrderSvc+".db"),
		Payment:   "sqlite:" + filepath.Join(dir, shop.PaymentSvc+".db"),
		Inventory: "sqlite:" + filepath.Join(dir, shop.InventorySvc+".db"),
	}
}

// OpenLedgers opens the three databases.
func OpenLedgers(ctx context.Context, u LedgerURLs) (*Ledgers, error) {
	l := &Ledgers{}
	var err error
	for _, x := range []struct {
		name, url string
		db        **outbox.DB
	}{{shop.OrderSvc, u.Order, &l.order}, {shop.PaymentSvc, u.Payment, &l.payment}, {shop.InventorySvc, u.Inventory, &l.inventory}} {
		if path, ok := strings.CutPrefix(x.url, "sqlite:"); ok {
			// Opening would create a missing file: say it is missing.
			if _, err := os.Stat(path); err != nil {
				return nil, errors.Join(fmt.Errorf("the %s database: %w", x.name, err), l.Close())
			}
		}
		if *x.db, err = outbox.Open(ctx, x.url); err != nil {
			return nil, errors.Join(fmt.Errorf("open the %s database: %w", x.name, err), l.Close())
		}
	}
	return l, nil
}

// Books reads the books now.
func (l *Ledgers) Books(ctx context.Context) (shop.Books, error) {
	return shop.ReadBooks(ctx, l.order, l.payment, l.inventory)
}

// Close closes the databases.
func (l *Ledgers) Close() error {
	var errs []error
	for _, db := range []*outbox.DB{l.order, l.payment, l.inventory} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}
