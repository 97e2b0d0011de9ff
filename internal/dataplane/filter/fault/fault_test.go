package fault

import "testing"

// TestFractionSample: over every draw of one full denominator, a fraction
// samples exactly Numerator requests (Envoy's FractionalPercent), so
// "25 %" as 250000/MILLION is a quarter, not "any".
func TestFractionSample(t *testing.T) {
	tests := []struct {
		name string
		f    Fraction
	}{
		{"zero", Fraction{0, 100}},
		{"one per hundred", Fraction{1, 100}},
		{"quarter per ten thousand", Fraction{2500, 10_000}},
		{"half per million", Fraction{500_000, 1_000_000}},
		{"all", Fraction{100, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := 0
			for rnd := uint64(0); rnd < uint64(tt.f.Denominator); rnd++ {
				if tt.f.sample(rnd) {
					got++
				}
			}
			if got != int(tt.f.Numerator) {
				t.Fatalf("%d of %d draws sampled, want %d", got, tt.f.Denominator, tt.f.Numerator)
			}
		})
	}
}
