"""The text-to-video loss on given latents and text embeddings, for benchmarks: the DiT and the
objective exactly as trained, without a VAE or text encoder in front (their cost is separate)."""
import jax.numpy as jnp


class LatentT2VTask:
  """The t2v loss on given latents/text embeddings (no VAE or text encoder in the way)."""

  def __init__(self, model, objective, num_tokens):
    self.model, self.objective, self.num_tokens = model, objective, num_tokens

  def init(self, rng, batch):
    t = jnp.zeros((batch["latents"].shape[0],))
    return {"dit": self.model.init(rng, batch["latents"], t, context=batch["context"],
                                   context_mask=batch["mask"])["params"]}

  def fn(self, params):
    return lambda x, t, c: self.model.apply({"params": params["dit"]}, x, t, context=c[0],
                                            context_mask=c[1])

  def loss(self, params, batch, rng, step):
    loss, m = self.objective.loss(self.fn(params), batch["latents"], rng,
                                  (batch["context"], batch["mask"]), self.num_tokens)
    return loss, {"t_mean": m["t_mean"]}
