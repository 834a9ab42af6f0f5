package vqvae

// Bytes estimates, in bytes and in float64 so that no size wraps, the
// memory of the model's parameters and of a pass over n images of h×w:
// the activation slots of the encoder and decoder, the code distances and
// the largest im2col buffer. With train, it adds the gradients of every
// slot and the parameters' gradients and Adam moments. It is an estimate
// for refusing configs that cannot fit, not an exact account.
func (c Config) Bytes(n, h, w int, train bool) (params, acts float64) {
	H, RH, R := float64(c.Hidden), float64(c.ResHidden), float64(c.ResBlocks)
	K, D, L := float64(c.K), float64(c.D), float64(max(c.Levels(), 1))
	P := 2*(16*H*H*L+9*H*H+R*(9*H*RH+RH*H)) + 2*H*D + 3*K*D
	pix := float64(n) * float64(h) * float64(w)
	q := pix / float64(max(c.Factor*c.Factor, 1))
	perPix := 6 + 1.4*H + 2*H                 // input, reconstruction, the strided levels, im2col
	perCode := 2*(2*H+R*(3*H+2*RH)) + 2*D + K // residual stacks, z_e, z_q, distances
	acts = 4 * (pix*perPix + q*perCode)
	params = 4 * P
	if train {
		acts *= 2
		params *= 4
	}
	return params, acts
}
