//! Polynomials over the BLS12-381 scalar field and Lagrange interpolation at zero.
//!
//! Share `i` (a receiver's 0-based index) is the polynomial evaluated at x = i + 1, so that no
//! share ever sits at x = 0, where the secret is.

use blstrs::Scalar;
use ff::Field;

use crate::CryptoError;

/// x-coordinate of the share held by the receiver with 0-based `index`.
pub fn x_of(index: u32) -> Scalar {
    Scalar::from(u64::from(index) + 1)
}

/// A secret polynomial of degree `threshold − 1`.
#[derive(Clone)]
pub struct Polynomial(pub(crate) Vec<Scalar>);

impl Polynomial {
    /// Random polynomial with the given constant term and `threshold` coefficients.
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng>(
        rng: &mut R,
        constant: Scalar,
        threshold: usize,
    ) -> Self {
        let mut c = Vec::with_capacity(threshold);
        c.push(constant);
        for _ in 1..threshold {
            c.push(crate::bls::random_scalar(rng));
        }
        Polynomial(c)
    }

    /// Horner evaluation.
    pub fn evaluate(&self, x: &Scalar) -> Scalar {
        self.0.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
    }

    pub fn coefficients(&self) -> &[Scalar] {
        &self.0
    }
}

/// Lagrange coefficients λ_i for interpolating at x = 0 from the points `xs` (all distinct).
pub fn lagrange_at_zero(xs: &[Scalar]) -> Result<Vec<Scalar>, CryptoError> {
    let mut out = Vec::with_capacity(xs.len());
    for (i, xi) in xs.iter().enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                num *= xj;
                den *= *xj - xi;
            }
        }
        let inv = Option::<Scalar>::from(den.invert())
            .ok_or(CryptoError::Malformed("repeated interpolation point"))?;
        out.push(num * inv);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn interpolation_recovers_the_constant() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let secret = crate::bls::random_scalar(&mut rng);
        let p = Polynomial::random(&mut rng, secret, 3);
        let idx = [4u32, 0, 9];
        let xs: Vec<_> = idx.iter().map(|i| x_of(*i)).collect();
        let lambdas = lagrange_at_zero(&xs).unwrap();
        let got: Scalar = xs
            .iter()
            .zip(&lambdas)
            .map(|(x, l)| p.evaluate(x) * l)
            .sum();
        assert_eq!(got, secret);
    }

    #[test]
    fn repeated_points_are_rejected() {
        let xs = [x_of(1), x_of(1)];
        assert!(lagrange_at_zero(&xs).is_err());
    }
}
