# The demo's stand-ins for what the paper preset downloads (included for preset=demo only):
# synthetic ADE20K and COCO-Stuff zips in the real layouts, the synthetic trunks in the
# released file format, and stand-ins for the released segmentation checkpoints in the
# original's keys.


localrules:
    make_demo_released,


SYNTHETIC = {t.file: t.name for t in TRUNKS.values() if t.synthetic}
# released file -> the run cell whose stand-in it is
RELEASED_CELL = {file: cell for cell, file in RELEASED_FILE.items()}


rule make_demo:
    """The synthetic ADEChallengeData2016.zip."""
    output:
        archive=source_files(DATASETS["ade20k"], DATA_SETTINGS["ade20k"])[0],
    log:
        f"{RES}/logs/make_demo.log",
    conda:
        ENV
    params:
        train=DATA_SETTINGS["ade20k"]["train_count"],
        val=DATA_SETTINGS["ade20k"]["val_count"],
    shell:
        "internseg make-demo --zip {output.archive}"
        " --train-count {params.train} --val-count {params.val} > {log} 2>&1"


rule make_demo_coco_stuff:
    """Synthetic COCO-Stuff-164K zips in the real names and layout."""
    output:
        source_files(DATASETS["coco_stuff164k"], DATA_SETTINGS["coco_stuff164k"]),
    log:
        f"{RES}/logs/make_demo_coco_stuff.log",
    conda:
        ENV
    params:
        zips=lambda wildcards, output: os.path.dirname(output[0]),
        train=DATA_SETTINGS["coco_stuff164k"]["train_count"],
        val=DATA_SETTINGS["coco_stuff164k"]["val_count"],
    shell:
        "internseg make-demo --coco-stuff {params.zips}"
        " --train-count {params.train} --val-count {params.val} > {log} 2>&1"


rule make_demo_trunk:
    """A synthetic registered trunk, saved like the released pretrained file."""
    output:
        f"{SETTINGS['weights_local_dir']}/{{trunk_file}}",
    log:
        f"{RES}/logs/make_demo_trunk/{{trunk_file}}.log",
    wildcard_constraints:
        trunk_file="|".join(map(re.escape, SYNTHETIC)),
    conda:
        ENV
    params:
        trunk=lambda wildcards: SYNTHETIC[wildcards.trunk_file],
    shell:
        "internseg make-demo --trunk {params.trunk} --checkpoint {output} > {log} 2>&1"


rule make_demo_released:
    """Demo stand-in for a released checkpoint, in the original's key layout."""
    input:
        # the fetched trunk, not its source in weights_local_dir: fetch_weights hard-links
        # the two and Snakemake then touches its output, so the source's mtime moves too
        lambda wildcards: weights_of(RELEASED_CELL[wildcards.released_file][1]),
    output:
        f"{SETTINGS['weights_local_dir']}/{{released_file}}",
    log:
        f"{RES}/logs/make_demo_released/{{released_file}}.log",
    wildcard_constraints:
        released_file="|".join(map(re.escape, RELEASED_CELL)),
    conda:
        ENV
    params:
        cell=lambda wildcards: RELEASED_CELL[wildcards.released_file],
    shell:
        "internseg make-demo-released {params.cell[2]} --trunk {params.cell[1]}"
        " --dataset {params.cell[0]} --pretrained {input} --out {output} > {log} 2>&1"
