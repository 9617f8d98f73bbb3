"""The KL coefficient beta of the reward -beta * KL(policy || reference).

Fixed, or adaptive as in Ziegler et al. 2019 ("Fine-Tuning Language Models from Human
Preferences", section 2.2): beta moves by a proportional error against a target KL,
clipped to +-20%, scaled by the number of episodes over a horizon.
"""


class FixedKL:
    def __init__(self, beta):
        self.beta = beta

    def update(self, kl, episodes):
        pass

    def state_dict(self):
        return {"beta": self.beta}

    def load_state_dict(self, state):
        self.beta = state["beta"]


class AdaptiveKL(FixedKL):
    def __init__(self, beta, target, horizon=10000):
        super().__init__(beta)
        self.target, self.horizon = target, horizon

    def update(self, kl, episodes):
        error = min(max(kl / self.target - 1, -0.2), 0.2)
        self.beta *= 1 + error * episodes / self.horizon
