"""Exercise 3 (notebook 04), labkit's answer: the rebalancing rule, when D may take its step."""


def update_discriminator(step, loss_D, loss_G, every=1, pause_ratio=0.0):
    """The rebalancing rule: does D take its optimizer step at training step `step` (1, 2, 3, ...)?

    every:       update D only on steps 1, 1 + every, 1 + 2 * every, ... (1: every step).
    pause_ratio: skip D's update while loss_D / loss_G < pause_ratio: D is winning
                 by that margin, so let G catch up (0: never pause).
    loss_D:      D's loss on this step's batch (a float);
    loss_G:      G's loss on the previous step (None at the first step: no pause then).
    """
    if (step - 1) % every != 0:
        return False
    if pause_ratio > 0 and loss_G is not None:
        return loss_D / max(loss_G, 1e-12) >= pause_ratio
    return True
