"""Stage 7: the sweep that runs every (strategy, budget) cell over the data set.

``build`` turns a config into parts, ``module`` is the LightningModule, ``records`` owns the
per-image record layout and its sentinels, ``resume`` and ``partial`` keep work across kills,
``evaluate`` is the job as named stages. Nothing is imported here: Lightning loads on use.
"""
