package shop_test

import (
	"bytes"
	"errors"
	"math/big"
	"strings"
	"testing"
	"unicode"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// FuzzPlaceRequest: the body of POST /orders is untrusted input. Decoding
// and validation refuse what is wrong with an error (validation's names
// the field), never a panic; a request they accept is right in exact
// arithmetic: its amount is what its items add up to, whatever the sizes
// of the numbers.
func FuzzPlaceRequest(f *testing.F) {
	f.Add([]byte(`{"customer":"ann","items":[{"sku":"apple","quantity":2,"price":150}],"amount":300,"payment_method":"card"}`))
	f.Add([]byte(`{"customer":"bob","items":[{"sku":"a","quantity":1,"price":1},{"sku":"b","quantity":3,"price":0}],"amount":1,"payment_method":"card"}`))
	f.Add([]byte(`{"customer":"x","items":[{"sku":"a","quantity":4611686018427387904,"price":4}],"amount":0,"payment_method":"card"}`))
	f.Add([]byte(`{"customer":"x","items":[{"sku":"a","quantity":9223372036854775807,"price":1},{"sku":"b","quantity":1,"price":1}],"amount":-9223372036854775808,"payment_method":"card"}`))
	f.Add([]byte(`{"customer":"x","colour":"red"}`))
	f.Add([]byte(`{"customer":"x"} {}`))
	f.Add([]byte(`{"customer":"a\u0000b","items":[{"sku":"apple","quantity":1,"price":1}],"amount":1,"payment_method":"card"}`))
	f.Add([]byte(`{"customer":"ann","items":[{"sku":"ap\nple","quantity":1,"price":1}],"amount":1,"payment_method":"card"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := shop.DecodePlaceRequest(bytes.NewReader(body))
		if err != nil {
			return
		}
		err = req.Validate()
		if err != nil {
			fe, ok := errors.AsType[*shop.FieldError](err)
			if !ok || fe.Field == "" {
				t.Fatalf("refused without naming the field: %v", err)
			}
			return
		}
		if strings.TrimSpace(req.Customer) == "" || req.PaymentMethod == "" || len(req.Items) == 0 {
			t.Fatalf("accepted without a customer, payment method or item: %+v", req)
		}
		texts := []string{req.Customer, req.PaymentMethod}
		for _, it := range req.Items {
			texts = append(texts, it.SKU)
		}
		for _, s := range texts {
			if len(s) > shop.MaxText || strings.ContainsFunc(s, unicode.IsControl) {
				t.Fatalf("accepted text %q (over %d bytes, or a control character)", s, shop.MaxText)
			}
		}
		total := new(big.Int)
		for _, it := range req.Items {
			if it.SKU == "" || it.Quantity <= 0 || it.Price < 0 {
				t.Fatalf("accepted item %+v", it)
			}
			total.Add(total, new(big.Int).Mul(big.NewInt(int64(it.Quantity)), big.NewInt(int64(it.Price))))
		}
		if total.Cmp(big.NewInt(int64(req.Amount))) != 0 {
			t.Fatalf("accepted amount %d for items adding up to %s", req.Amount, total)
		}
	})
}
